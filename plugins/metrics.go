package plugins

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// hostMetrics are the plugin host's collectors: RPC latency and errors,
// cache hits and misses, and, read from Health at each scrape, whether each
// plugin is up, how often it was restarted and which version runs. The
// plugin label is an instance name from the config: a small fixed set.
type hostMetrics struct {
	rpcDuration *prometheus.HistogramVec
	rpcErrors   *prometheus.CounterVec
	cacheHits   *prometheus.CounterVec
	cacheMisses *prometheus.CounterVec
}

// instanceMetrics are one plugin's children of hostMetrics, looked up once.
// A nil *instanceMetrics measures nothing.
type instanceMetrics struct {
	rpcDuration prometheus.Observer
	rpcErrors   prometheus.Counter
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
}

// newHostMetrics registers h's collectors with reg; a nil reg measures
// nothing and returns nil.
func newHostMetrics(reg prometheus.Registerer, h *Host) *hostMetrics {
	if reg == nil {
		return nil
	}
	m := &hostMetrics{
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agent_server_plugin_rpc_duration_seconds",
			Help:    "Duration of Authenticate RPCs to each auth plugin process, cache hits excluded.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},

			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"plugin"}),
		rpcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_server_plugin_rpc_errors_total",
			Help: "Authenticate calls to each auth plugin that failed (error, timeout, process down); they fail closed.",
		}, []string{"plugin"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_server_auth_cache_hits_total",
			Help: "Plugin decisions answered from the decision cache, by plugin.",
		}, []string{"plugin"}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_server_auth_cache_misses_total",
			Help: "Plugin decisions the decision cache did not hold, by plugin (each became an RPC).",
		}, []string{"plugin"}),
	}
	reg.MustRegister(m.rpcDuration, m.rpcErrors, m.cacheHits, m.cacheMisses, &healthCollector{h: h})
	return m
}

// instance returns the children for plugin name.
func (m *hostMetrics) instance(name string) *instanceMetrics {
	if m == nil {
		return nil
	}
	return &instanceMetrics{
		rpcDuration: m.rpcDuration.WithLabelValues(name),
		rpcErrors:   m.rpcErrors.WithLabelValues(name),
		cacheHits:   m.cacheHits.WithLabelValues(name),
		cacheMisses: m.cacheMisses.WithLabelValues(name),
	}
}

// rpc records one Authenticate RPC that started at start.
func (m *instanceMetrics) rpc(start time.Time, failed bool) {
	if m == nil {
		return
	}
	m.rpcDuration.Observe(time.Since(start).Seconds())
	if failed {
		m.rpcErrors.Inc()
	}
}

// failed records a call that failed without an RPC (the process is down).
func (m *instanceMetrics) failed() {
	if m != nil {
		m.rpcErrors.Inc()
	}
}

// cache records a cache lookup.
func (m *instanceMetrics) cache(hit bool) {
	switch {
	case m == nil:
	case hit:
		m.cacheHits.Inc()
	default:
		m.cacheMisses.Inc()
	}
}

// healthCollector reads each plugin's Health at scrape time.
type healthCollector struct{ h *Host }

var (
	pluginUpDesc = prometheus.NewDesc("agent_server_plugin_up",
		"1 while the auth plugin's process is serving, 0 while it is starting, restarting, failed or stopped.", []string{"plugin"}, nil)
	pluginRestartsDesc = prometheus.NewDesc("agent_server_plugin_restarts_total",
		"Successful restarts of the auth plugin's process after it exited.", []string{"plugin"}, nil)
	pluginInfoDesc = prometheus.NewDesc("agent_server_plugin_info",
		"The running auth plugin's version and negotiated protocol version; always 1.", []string{"plugin", "version", "protocol"}, nil)
)

// Describe sends the three descriptors.
func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pluginUpDesc
	ch <- pluginRestartsDesc
	ch <- pluginInfoDesc
}

// Collect reads every plugin's Health.
func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	for _, in := range c.h.instancesInOrder() {
		hl := in.health()
		up := 0.0
		if hl.State == StateReady {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(pluginUpDesc, prometheus.GaugeValue, up, hl.Name)
		ch <- prometheus.MustNewConstMetric(pluginRestartsDesc, prometheus.CounterValue, float64(hl.Restarts), hl.Name)
		protocol := ""
		if cn := in.conn.Load(); cn != nil {
			protocol = strconv.Itoa(cn.protocol)
		}
		ch <- prometheus.MustNewConstMetric(pluginInfoDesc, prometheus.GaugeValue, 1, hl.Name, in.info.Version, protocol)
	}
}
