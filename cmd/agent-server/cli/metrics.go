package cli

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry returns the server's own metrics registry, with the Go
// runtime's and the process's collectors and agent_server_build_info, or
// nil when metrics.enabled is off. Every package registers its collectors
// in it; the admin listener serves it.
func newRegistry(enabled bool) *prometheus.Registry {
	if !enabled {
		return nil
	}
	reg := prometheus.NewRegistry()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agent_server_build_info",
		Help: "The running build: its version and Go version; always 1.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(Version, runtime.Version()).Set(1)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), build)
	return reg
}

// lossCounter is an audit sink that counts the records it could not
// write (auditlog.Writer and File).
type lossCounter interface{ Failed() int64 }

// registerAuditLoss exports agent_server_audit_records_lost_total for
// sink, when metrics are on and the sink counts its losses.
func registerAuditLoss(reg prometheus.Registerer, sink any) {
	lc, ok := sink.(lossCounter)
	if reg == nil || !ok {
		return
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "agent_server_audit_records_lost_total",
		Help: "Audit records the sink could not write: refused by it, or accepted and then lost to a write error.",
	}, func() float64 { return float64(lc.Failed()) }))
}

// reloadMetrics counts config reloads by result. A nil *reloadMetrics
// counts nothing.
type reloadMetrics struct{ reloads *prometheus.CounterVec }

// The results of a config reload.
const (
	reloadApplied   = "applied"   // the new config is running
	reloadRejected  = "rejected"  // invalid, or refused by the plugin host: the old one stays
	reloadUnchanged = "unchanged" // nothing to apply
)

func newReloadMetrics(reg prometheus.Registerer) *reloadMetrics {
	if reg == nil {
		return nil
	}
	m := &reloadMetrics{reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agent_server_config_reloads_total",
		Help: "Config reloads (file change or SIGHUP), by result: applied, rejected or unchanged.",
	}, []string{"result"})}
	for _, r := range []string{reloadApplied, reloadRejected, reloadUnchanged} {
		m.reloads.WithLabelValues(r)
	}
	reg.MustRegister(m.reloads)
	return m
}

// reloaded counts one reload with result.
func (m *reloadMetrics) reloaded(result string) {
	if m != nil {
		m.reloads.WithLabelValues(result).Inc()
	}
}
