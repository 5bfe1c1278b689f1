package cli

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/auditlog"
)

// failingWriter refuses every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// The audit records a sink could not write are exported; a sink that
// counts none (audit.sink: off) exports nothing.
func TestAuditLossMetric(t *testing.T) {
	tests := []struct {
		name    string
		sink    func() core.AuditSink
		records int
		want    int // series registered
		lost    float64
	}{
		{"records lost to a failing output", func() core.AuditSink { return auditlog.NewWriter(failingWriter{}) }, 3, 1, 3},
		{"sink off", func() core.AuditSink { return nil }, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			sink := tt.sink()
			registerAuditLoss(reg, sink)
			for range tt.records {
				sink.Audit(&core.AuditRecord{Event: core.AuditHandshake})
			}
			n, err := testutil.GatherAndCount(reg, "agent_server_audit_records_lost_total")
			if err != nil || n != tt.want {
				t.Fatalf("series = %d (%v), want %d", n, err, tt.want)
			}
			if n == 0 {
				return
			}
			mfs, _ := reg.Gather()
			if got := mfs[0].GetMetric()[0].GetCounter().GetValue(); got != tt.lost {
				t.Errorf("lost = %v, want %v", got, tt.lost)
			}
		})
	}
}
