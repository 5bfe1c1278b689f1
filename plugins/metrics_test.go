package plugins_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agent-server/agent-server/core"
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

// A cache hit is counted once, whether the chain settled or ran: a chain
// that settles only part of the way (a cached abstain, then a member the
// cache does not hold) counts its hits in the Authenticate that runs it
// again, not also in Settle.
func TestCacheHitCountedOnceWhenTheChainCannotSettle(t *testing.T) {
	cfg := testConfig(t, true)
	cfg.Auth.Chains.Events = []string{"bearer", "header"}
	h, reg := startMeasuredHost(t, cfg)
	c := chain(t, h, core.RouteEvents)
	ctx := context.Background()
	hits := func() float64 { return gauge(t, reg, `agent_server_auth_cache_hits_total{plugin="bearer"}`) }

	// bearer abstains on Basic, and the cache keeps that; header allows.
	if res := c.Authenticate(ctx, request("", "Authorization", "Basic eA==", "X-Session-API-Key", validKey)); res.Decision != core.Allow {
		t.Fatalf("first: got %s (%v), want allow", res.Decision, res.Err)
	}
	if got := hits(); got != 0 {
		t.Fatalf("hits after the first call = %v, want 0", got)
	}
	// bearer's abstain is cached, header's answer for this key is not.
	req := request("", "Authorization", "Basic eA==", "X-Session-API-Key", "another")
	if _, ok := c.Settle(req); ok {
		t.Fatal("Settle settled a chain whose second member the cache does not hold")
	}
	if res := c.Authenticate(ctx, req); res.Decision != core.Deny {
		t.Fatalf("second: got %s (%v), want deny", res.Decision, res.Err)
	}
	if got := hits(); got != 1 {
		t.Errorf("bearer's hits = %v, want 1: Settle's lookup and Authenticate's are one hit", got)
	}
	// Settled at once: bearer's abstain and header's deny are both cached.
	if res, ok := c.Settle(req); !ok || res.Decision != core.Deny {
		t.Fatalf("third: Settle = %s, %v; want a settled deny", res.Decision, ok)
	}
	if got := hits(); got != 2 {
		t.Errorf("bearer's hits after a settled chain = %v, want 2", got)
	}
}
