package suite

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/bench/target"
)

func TestSummarizeStats(t *testing.T) {
	tests := []struct {
		in   []float64
		want stats
	}{
		{[]float64{3, 1, 2}, stats{n: 3, med: 2, min: 1, max: 3}},
		{[]float64{4, 1, math.NaN(), 2, 3}, stats{n: 4, med: 2.5, min: 1, max: 4}},
	}
	for _, tt := range tests {
		if got := summarize(tt.in); got != tt.want {
			t.Errorf("summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
	if got := summarize(nil); got.n != 0 || !math.IsNaN(got.med) {
		t.Errorf("summarize(nil) = %+v", got)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		unit string
		v    float64
		want string
	}{
		{"rate", 1234567.4, "1,234,567"},
		{"count", 0, "0"},
		{"ms", 3.14159, "3.14 ms"},
		{"ms", 123.4, "123 ms"},
		{"us", 12.34, "12.3 µs"},
		{"x", 1.08, "1.08x"},
		{"%", 97.4, "97%"},
		{"KiB", math.NaN(), "- KiB"},
	}
	for _, tt := range tests {
		if got := format(tt.unit, tt.v); got != tt.want {
			t.Errorf("format(%q, %v) = %q, want %q", tt.unit, tt.v, got, tt.want)
		}
	}
}

// Two runs of connect give medians, per-run ratios and a verdict.
func TestMarkdown(t *testing.T) {
	conn := func(rate float64) *load.ConnectResult {
		return &load.ConnectResult{Attempts: 10, OK: 10, PerSecond: rate, Elapsed: time.Second, TimeToReady: load.Summary{Count: 10, P50: time.Millisecond, P99: 2 * time.Millisecond}}
	}
	rep := &Report{
		Config: Config{Targets: []target.Kind{target.AgentServer, target.Baseline}, Runs: 2, Params: Tiny()},
		Measurements: []Measurement{
			{Case: CaseConnect, Target: target.AgentServer, Run: 1, Result: conn(600)},
			{Case: CaseConnect, Target: target.Baseline, Run: 1, Result: conn(1000)},
			{Case: CaseConnect, Target: target.AgentServer, Run: 2, Result: conn(800)},
			{Case: CaseConnect, Target: target.Baseline, Run: 2, Result: conn(1000)},
		},
	}
	var b strings.Builder
	rep.Markdown(&b)
	out := b.String()
	for _, want := range []string{
		"| agent-server | baseline | ours/baseline |",
		"| connects/s | 700 [600-800] | 1,000 | 0.70x (0.60-0.80) | ratio >= 0.7x | met |",
		"| errors | 0 | 0 |  | <= 0 | met |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}
