package actors

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/memstore"
)

// measured starts a system that registers its collectors with a registry
// of the test's own.
func measured(t *testing.T) (*System, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	chains := staticChains{core.RouteEvents: mustChain(t, core.RouteEvents, &keyAuth{key: "k"})}
	sys, err := New(Options{Store: memstore.New(), Chains: chains, Metrics: reg, StoreDriver: "memory"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sys.Shutdown(ctx)
	})
	return sys, reg
}

// Appends, commits, conversations and decisions move their collectors by
// exactly what happened.
func TestSystemMetrics(t *testing.T) {
	sys, reg := measured(t)
	h := &harness{sys: sys}
	id := h.conversation(t)
	for i := range 3 {
		h.post(t, id, string(rune('a'+i)))
	}
	sys.RecordAuth(&core.AuditRecord{Route: core.RouteEvents, Plugin: "testkey", Decision: core.DecisionAllow, ReasonClass: core.ClassNone})
	sys.RecordAuth(&core.AuditRecord{Route: core.RouteEvents, Decision: core.DecisionDeny, ReasonClass: core.ClassNoCredentials})

	tests := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"appended", sys.metrics.appended, 3},
		{"allow", sys.metrics.decisions.WithLabelValues("events", "testkey", "allow", "none"), 1},
		{"deny by none", sys.metrics.decisions.WithLabelValues("events", "none", "deny", "no_credentials"), 1},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(tt.c); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(reg, "agent_server_store_commit_duration_seconds"); n != 1 {
		t.Errorf("commit histograms: %d series, want 1 (driver memory)", n)
	}
	running, err := testutil.GatherAndCount(reg, "agent_server_conversations")
	if err != nil || running != 2 {
		t.Errorf("conversations series = %d (%v), want running and passivated", running, err)
	}
	// The latency histograms are native histograms too, for a Prometheus
	// that scrapes them (protobuf), besides their classic buckets.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	native := false
	for _, mf := range mfs {
		if mf.GetName() == "agent_server_store_commit_duration_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			native = h.Schema != nil && len(h.GetPositiveSpan()) > 0 && len(h.GetBucket()) > 0
		}
	}
	if !native {
		t.Error("agent_server_store_commit_duration_seconds has no native buckets beside its classic ones")
	}
	if r, p, err := sys.ConversationCounts(context.Background()); err != nil || r != 1 || p != 0 {
		t.Errorf("ConversationCounts = %d running, %d passivated, %v; want 1, 0", r, p, err)
	}
}

// The cluster collectors exist only once placement runs; then they read
// the members and activations placement keeps, and count what the relay
// and fencing code reports.
func TestClusterMetrics(t *testing.T) {
	sys, reg := measured(t)
	if n, _ := testutil.GatherAndCount(reg, "agent_server_cluster_members", "agent_server_cluster_remote_deliveries_total"); n != 0 {
		t.Fatalf("%d cluster series outside cluster mode, want none", n)
	}
	p := &placement{}
	p.members.Store(&[]Member{{ID: "a"}, {ID: "b"}, {ID: "c"}})
	p.owned.Store(4)
	m := sys.metrics
	m.watchPlacement(p)
	m.remoteDelivered(5)
	m.remoteDelivered(2)
	m.gapRepaired()
	m.fenced()
	m.fenced()
	tests := []struct {
		name string
		want float64
	}{
		{"agent_server_cluster_members", 3},
		{"agent_server_cluster_conversations_owned", 4},
		{"agent_server_cluster_remote_deliveries_total", 7},
		{"agent_server_cluster_gap_repairs_total", 1},
		{"agent_server_cluster_fenced_activations_total", 2},
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			got[mf.GetName()] = mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
		}
	}
	for _, tt := range tests {
		if got[tt.name] != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, got[tt.name], tt.want)
		}
	}
	var none *metrics // metrics.enabled: false
	none.remoteDelivered(1)
	none.gapRepaired()
	none.fenced()
	none.watchPlacement(p)
}
