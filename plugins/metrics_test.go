package plugins_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
)

// startMeasuredHost starts a host for cfg whose metrics go to a registry
// of its own, and closes it when the test ends.
func startMeasuredHost(t *testing.T, cfg config.Config) (*plugins.Host, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	log, _ := newLogger()
	h := plugins.NewHost(cfg, log, plugins.WithMetrics(reg))
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, reg
}

// gauge returns the value of series, written name{label="value",...}, from
// reg: a gauge's or counter's value, a histogram's sample count. A series
// reg does not hold fails the test.
func gauge(t *testing.T, reg *prometheus.Registry, series string) float64 {
	t.Helper()
	name, rest, _ := strings.Cut(series, "{")
	want := map[string]string{}
	for _, pair := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
		if k, v, ok := strings.Cut(pair, "="); ok {
			want[k] = strings.Trim(v, `"`)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, want) {
				switch {
				case m.Gauge != nil:
					return m.GetGauge().GetValue()
				case m.Counter != nil:
					return m.GetCounter().GetValue()
				case m.Histogram != nil:
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}
