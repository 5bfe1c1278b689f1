package plugins

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// hostMetrics are the plugin host's collectors: RPC latency and errors,
// cache hits and misses, waits for a call slot and refusals, and, read
// from Health at each scrape, whether each plugin and each of its
// processes is up, how often they were restarted, the calls in flight and
// waiting, and which version runs. The plugin label is an instance name
// from the config and the process label an index below plugins.processes:
// small fixed sets.
type hostMetrics struct {
	rpcDuration *prometheus.HistogramVec
	rpcErrors   *prometheus.CounterVec
	cacheHits   *prometheus.CounterVec
	cacheMisses *prometheus.CounterVec
	queueWaits  *prometheus.HistogramVec
	rejections  *prometheus.CounterVec
}

// instanceMetrics are one plugin's children of hostMetrics, looked up once.
// A nil *instanceMetrics measures nothing.
type instanceMetrics struct {
	rpcDuration prometheus.Observer
	rpcErrors   prometheus.Counter
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
	queueWaits  prometheus.Observer
	rejections  map[string]prometheus.Counter // by reason
}

// Why a call was refused a slot, the reason label of
// agent_server_auth_queue_rejections_total.
const (
	rejectFull    = "full"    // auth.queue.size calls were already waiting
	rejectTimeout = "timeout" // no slot came free within auth.queue.max_wait
)

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
		queueWaits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agent_server_auth_queue_wait_seconds",
			Help:    "How long calls to each auth plugin waited for a call slot (auth.queue), whether they got one or were refused; calls that found a slot free at once are not counted.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},

			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"plugin"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_server_auth_queue_rejections_total",
			Help: "Calls to each auth plugin refused because every call slot was busy (they fail closed, 503): reason full (auth.queue.size calls already waited) or timeout (no slot within auth.queue.max_wait).",
		}, []string{"plugin", "reason"}),
	}
	reg.MustRegister(m.rpcDuration, m.rpcErrors, m.cacheHits, m.cacheMisses, m.queueWaits, m.rejections, &healthCollector{h: h})
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
		queueWaits:  m.queueWaits.WithLabelValues(name),
		rejections: map[string]prometheus.Counter{
			rejectFull:    m.rejections.WithLabelValues(name, rejectFull),
			rejectTimeout: m.rejections.WithLabelValues(name, rejectTimeout),
		},
	}
}

// waited records a wait for a call slot.
func (m *instanceMetrics) waited(d time.Duration) {
	if m != nil {
		m.queueWaits.Observe(d.Seconds())
	}
}

// rejected records a call refused a slot, for reason.
func (m *instanceMetrics) rejected(reason string) {
	if m != nil {
		m.rejections[reason].Inc()
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
		"1 while at least one of the auth plugin's processes is serving, 0 while none is (starting, restarting, failed or stopped).", []string{"plugin"}, nil)
	processUpDesc = prometheus.NewDesc("agent_server_plugin_process_up",
		"1 while this process of the auth plugin is serving, 0 while it starts, restarts, has failed or is stopped.", []string{"plugin", "process"}, nil)
	pluginRestartsDesc = prometheus.NewDesc("agent_server_plugin_restarts_total",
		"Successful restarts of the auth plugin's processes after one exited, failed or hung.", []string{"plugin"}, nil)
	pluginInfoDesc = prometheus.NewDesc("agent_server_plugin_info",
		"The running auth plugin's version and negotiated protocol version; always 1.", []string{"plugin", "version", "protocol"}, nil)
	inFlightDesc = prometheus.NewDesc("agent_server_plugin_calls_in_flight",
		"Calls the auth plugin's processes have been given and not answered yet; each process takes at most plugins.max_in_flight.", []string{"plugin"}, nil)
	queueDepthDesc = prometheus.NewDesc("agent_server_auth_queue_depth",
		"Calls waiting for a call slot of the auth plugin (auth.queue).", []string{"plugin"}, nil)
)

// Describe sends the descriptors.
func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pluginUpDesc, processUpDesc, pluginRestartsDesc, pluginInfoDesc, inFlightDesc, queueDepthDesc} {
		ch <- d
	}
}

// Collect reads every plugin's Health.
func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, in := range c.h.instancesInOrder() {
		hl := in.health()
		gauge(pluginUpDesc, oneIf(hl.Up() > 0), hl.Name)
		inFlight := 0
		for _, p := range hl.Processes {
			gauge(processUpDesc, oneIf(p.State == StateReady), hl.Name, strconv.Itoa(p.Index))
			inFlight += p.InFlight
		}
		ch <- prometheus.MustNewConstMetric(pluginRestartsDesc, prometheus.CounterValue, float64(hl.Restarts), hl.Name)
		protocol := ""
		if v := in.protocol(); v != 0 {
			protocol = strconv.Itoa(v)
		}
		gauge(pluginInfoDesc, 1, hl.Name, in.info.Version, protocol)
		gauge(inFlightDesc, float64(inFlight), hl.Name)
		gauge(queueDepthDesc, float64(in.queueDepth()), hl.Name)
	}
}

func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
