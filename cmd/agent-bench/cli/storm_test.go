package cli

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/bench/suite"
)

// TestStormFlagsParse: the storm flags set the storm's parameters, and
// leave the defaults where absent.
func TestStormFlagsParse(t *testing.T) {
	d := suite.Defaults().Storm
	tests := []struct {
		args    []string
		want    func(p *load.StormParams)
		wantErr bool
	}{
		{nil, func(*load.StormParams) {}, false},
		{[]string{"-storm-n", "7", "-storm-per-conv", "3"}, func(p *load.StormParams) { p.N, p.PerConversation = 7, 3 }, false},
		{[]string{"-storm-rate=0.5", "-storm-jitter=250ms", "-storm-hold", "2s"}, func(p *load.StormParams) {
			p.Rate, p.Jitter, p.Hold = 0.5, 250*time.Millisecond, 2*time.Second
		}, false},
		{[]string{"-storm-n", "many"}, nil, true},
		{[]string{"-storm-hold", "11"}, nil, true}, // a duration needs its unit
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			got := d
			stormFlags(fs, &got)
			err := fs.Parse(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parse %q: error %v, want one: %v", tt.args, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			want := d
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("parse %q:\ngot  %+v\nwant %+v", tt.args, got, want)
			}
		})
	}
}

// flagHelp returns the help text of each flag that agent-bench args -h
// lists, by flag name, defaults left out.
func flagHelp(t *testing.T, args ...string) map[string]string {
	t.Helper()
	var stderr bytes.Buffer
	if code := Main(append(args, "-h"), io.Discard, &stderr); code != exitUsage {
		t.Fatalf("agent-bench %s -h: exit %d, want %d", strings.Join(args, " "), code, exitUsage)
	}
	help := map[string]string{}
	var name string
	for _, line := range strings.Split(stderr.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "  -"):
			name = strings.Fields(line)[0][1:]
			help[name] = ""
		case name != "" && strings.HasPrefix(line, "    \t"):
			text, _, _ := strings.Cut(strings.TrimPrefix(line, "    \t"), " (default ")
			help[name] = strings.TrimSpace(help[name] + " " + text)
		}
	}
	return help
}

// TestStormFlagsOneHelpText: agent-bench and agent-bench cluster define
// the storm flags they share with the same help text, and every storm flag
// the docs name is one of theirs.
func TestStormFlagsOneHelpText(t *testing.T) {
	run, cluster := flagHelp(t), flagHelp(t, "cluster")
	for _, name := range []string{"storm-n", "storm-per-conv", "storm-rate", "storm-jitter", "storm-hold"} {
		if run[name] == "" || cluster[name] == "" {
			t.Errorf("-%s: agent-bench help %q, agent-bench cluster help %q; want both", name, run[name], cluster[name])
			continue
		}
		if run[name] != cluster[name] {
			t.Errorf("-%s has two help texts:\nagent-bench:         %s\nagent-bench cluster: %s", name, run[name], cluster[name])
		}
	}
	documented := regexp.MustCompile("`-(storm-[a-z-]+)")
	for _, doc := range []string{"README.md", "docs/benchmarks.md"} {
		text, err := os.ReadFile(filepath.Join("..", "..", "..", doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range documented.FindAllStringSubmatch(string(text), -1) {
			if _, ok := run[m[1]]; !ok {
				if _, ok := cluster[m[1]]; !ok {
					t.Errorf("%s documents -%s, which neither agent-bench nor agent-bench cluster defines", doc, m[1])
				}
			}
		}
	}
}
