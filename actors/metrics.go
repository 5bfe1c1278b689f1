package actors

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-server/agent-server/core"
)

// metrics are the actor system's collectors: authentication decisions and
// chain latency, conversations, appends, fan-out and replays, the store's
// group commits and, in cluster mode, placement. Every method is safe on a
// nil *metrics, which measures nothing (metrics.enabled: false). Label
// values come from small fixed sets: routes, plugin instance names,
// decisions, reason classes, the storage driver.
type metrics struct {
	decisions     *prometheus.CounterVec   // route, plugin, decision, reason
	chainDuration *prometheus.HistogramVec // route
	firstMsgLate  prometheus.Counter

	appended     prometheus.Counter
	fanOut       prometheus.Histogram
	replays      prometheus.Counter
	replayEvents prometheus.Counter

	commitDuration prometheus.Observer
	commitEvents   prometheus.Observer
	storeErrors    prometheus.Counter

	// Cluster mode's, registered by watchPlacement only when it runs.
	reg              prometheus.Registerer
	remoteDeliveries prometheus.Counter
	gapRepairs       prometheus.Counter
	fencedActs       prometheus.Counter
}

// nativeHistogram adds native-histogram buckets to classic ones, so that a
// Prometheus scraping native histograms gets them too.
func nativeHistogram(o prometheus.HistogramOpts) prometheus.HistogramOpts {
	o.NativeHistogramBucketFactor = 1.1
	o.NativeHistogramMaxBucketNumber = 160
	o.NativeHistogramMinResetDuration = time.Hour
	return o
}

// latencyBuckets are the classic buckets of the latency histograms, seconds.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// newMetrics registers the system's collectors with reg; a nil reg
// measures nothing and returns nil. driver labels the store's metrics.
func newMetrics(reg prometheus.Registerer, s *System, driver string) *metrics {
	if reg == nil {
		return nil
	}
	if driver == "" {
		driver = "unknown"
	}
	commitDuration := prometheus.NewHistogramVec(nativeHistogram(prometheus.HistogramOpts{
		Name:    "agent_server_store_commit_duration_seconds",
		Help:    "Duration of one group commit (one Store.AppendBatch: a transaction and its fsync), by storage driver.",
		Buckets: latencyBuckets,
	}), []string{"driver"})
	commitEvents := prometheus.NewHistogramVec(nativeHistogram(prometheus.HistogramOpts{
		Name:    "agent_server_store_commit_events",
		Help:    "Events in one group commit, by storage driver.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 8),
	}), []string{"driver"})
	storeErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agent_server_store_errors_total",
		Help: "Appends the store refused or failed (each fails its posts; the sockets stay), by storage driver.",
	}, []string{"driver"})
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_server_auth_decisions_total",
			Help: "Authentication decisions, by route, the plugin that decided (none when none did), decision (allow, deny, error) and reason class.",
		}, []string{"route", "plugin", "decision", "reason"}),
		chainDuration: prometheus.NewHistogramVec(nativeHistogram(prometheus.HistogramOpts{
			Name:    "agent_server_auth_chain_duration_seconds",
			Help:    "Duration of one run of a route's authenticator chain, cache hits included.",
			Buckets: latencyBuckets,
		}), []string{"route"}),
		firstMsgLate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_server_auth_first_message_timeouts_total",
			Help: "Sockets closed with 4001 because no first message came within auth.first_message_timeout.",
		}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_server_events_appended_total",
			Help: "Events appended to conversation logs (durable).",
		}),
		fanOut: prometheus.NewHistogram(nativeHistogram(prometheus.HistogramOpts{
			Name:    "agent_server_fanout_duration_seconds",
			Help:    "Time a conversation actor takes to hand one durable event to all its live subscribers' queues.",
			Buckets: []float64{.000001, .0000025, .000005, .00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .01},
		})),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_server_replays_total",
			Help: "Sockets that asked for history (resend_all, resend_mode, after_id).",
		}),
		replayEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_server_replay_events_total",
			Help: "Events sent by replays.",
		}),
		commitDuration: commitDuration.WithLabelValues(driver),
		commitEvents:   commitEvents.WithLabelValues(driver),
		storeErrors:    storeErrors.WithLabelValues(driver),

		reg: reg,
		remoteDeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_server_cluster_remote_deliveries_total",
			Help: "Events delivered to this node's subscribers from a conversation owned by another node.",
		}),
		gapRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_server_cluster_gap_repairs_total",
			Help: "Gaps in a remote event stream repaired by reading the missing events from the store.",
		}),
		fencedActs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agent_server_cluster_fenced_activations_total",
			Help: "Conversation activations on this node stopped because a newer owner fenced them off.",
		}),
	}
	reg.MustRegister(m.decisions, m.chainDuration, m.firstMsgLate, m.appended, m.fanOut, m.replays, m.replayEvents,
		commitDuration, commitEvents, storeErrors, &conversationsCollector{s: s})
	return m
}

// decided counts one authentication decision.
func (m *metrics) decided(rec *core.AuditRecord) {
	if m != nil {
		m.decisions.WithLabelValues(string(rec.Route), rec.Plugin, rec.Decision, rec.ReasonClass).Inc()
	}
}

// chainRan records one chain run that started at start.
func (m *metrics) chainRan(route core.Route, start time.Time) {
	if m != nil {
		m.chainDuration.WithLabelValues(string(route)).Observe(time.Since(start).Seconds())
	}
}

// firstMessageTimedOut counts a first-message timeout.
func (m *metrics) firstMessageTimedOut() {
	if m != nil {
		m.firstMsgLate.Inc()
	}
}

// fannedOut records one fan-out that started at start.
func (m *metrics) fannedOut(start time.Time) {
	if m != nil {
		m.fanOut.Observe(time.Since(start).Seconds())
	}
}

// replayStarted counts a socket that asked for history (any mode but
// ReplayNone).
func (m *metrics) replayStarted(mode ReplayMode) {
	if m != nil && mode != ReplayNone {
		m.replays.Inc()
	}
}

// replayed counts one event sent by a replay.
func (m *metrics) replayed() {
	if m != nil {
		m.replayEvents.Inc()
	}
}

// committed records one group commit of events that started at start, of
// which appended were stored and failed were refused.
func (m *metrics) committed(start time.Time, events, appended, failed int) {
	if m == nil {
		return
	}
	m.commitDuration.Observe(time.Since(start).Seconds())
	m.commitEvents.Observe(float64(events))
	m.appended.Add(float64(appended))
	if failed > 0 {
		m.storeErrors.Add(float64(failed))
	}
}

// Cluster mode. The lead's relay and fencing code calls these; placement
// calls watchPlacement once it has started.

// remoteDelivered counts n events delivered here from a remote owner.
func (m *metrics) remoteDelivered(n int) {
	if m != nil {
		m.remoteDeliveries.Add(float64(n))
	}
}

// gapRepaired counts one gap in a remote stream repaired from the store.
func (m *metrics) gapRepaired() {
	if m != nil {
		m.gapRepairs.Inc()
	}
}

// fenced counts one activation stopped by a newer owner's fence.
func (m *metrics) fenced() {
	if m != nil {
		m.fencedActs.Inc()
	}
}

// watchPlacement registers the cluster collectors, reading the members p
// sees and the activations it owns at each scrape. Call it once, when
// cluster mode has started.
func (m *metrics) watchPlacement(p *placement) {
	if m == nil {
		return
	}
	m.reg.MustRegister(m.remoteDeliveries, m.gapRepairs, m.fencedActs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "agent_server_cluster_members",
			Help: "Cluster members this node sees, itself included.",
		}, func() float64 { return float64(len(p.Members())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "agent_server_cluster_conversations_owned",
			Help: "Conversation activations running on this node.",
		}, func() float64 { return float64(p.owned.Load()) }))
}

// conversationsCollector asks the registry, at each scrape, how many
// conversation actors run and how many known conversations are passivated.
type conversationsCollector struct{ s *System }

var conversationsDesc = prometheus.NewDesc("agent_server_conversations",
	"Conversations this node knows, by state: running (an actor is up) or passivated (stopped while idle; back on next use).",
	[]string{"state"}, nil)

// countTimeout bounds the registry's answer to a scrape.
const countTimeout = time.Second

// Describe sends the descriptor.
func (c *conversationsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- conversationsDesc }

// Collect asks the registry; it sends nothing when the registry does not
// answer in time or the system is shutting down.
func (c *conversationsCollector) Collect(ch chan<- prometheus.Metric) {
	known, running, err := c.s.countConversations(context.Background())
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(conversationsDesc, prometheus.GaugeValue, float64(running), "running")
	ch <- prometheus.MustNewConstMetric(conversationsDesc, prometheus.GaugeValue, float64(known-running), "passivated")
}

// countConversations asks the registry how many conversations it knows and
// how many actors run.
func (s *System) countConversations(ctx context.Context) (known, running int, err error) {
	res, err := s.requestWithin(ctx, s.registry, &countConversations{}, countTimeout)
	if err != nil {
		return 0, 0, err
	}
	n, ok := res.(*conversationsCounted)
	if !ok {
		return 0, 0, context.DeadlineExceeded
	}
	return n.Known, n.Active, nil
}
