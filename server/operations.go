package server

import (
	"context"
	"math"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The operations view: GET /api/operations answers the fleet figures the
// console's operations page draws (console/static/ops.js). They are the
// server's own, sampled in process every opsInterval from the metrics
// registry and the components' state, and kept for opsHistory; the browser
// never scrapes /metrics. Fleet figures are not one conversation's
// business, so only an unscoped principal (no conversation scopes) may read
// them: any other gets 403.

// Sampling of the operations view.
const (
	opsInterval = 2 * time.Second
	opsHistory  = 150 // samples: five minutes
	opsWindow   = time.Minute
)

// PluginStatus is one auth plugin as the operations view shows it.
type PluginStatus struct {
	Name      string `json:"name"`
	State     string `json:"state"` // starting, ready, restarting, failed, stopped
	Version   string `json:"version"`
	PID       int    `json:"pid"`
	Restarts  int    `json:"restarts"`
	LastError string `json:"last_error,omitempty"` // never holds a secret
	// Processes is how many processes the plugin runs (plugins.processes),
	// ProcessesUp how many of them serve; the plugin is ready while one is.
	Processes   int `json:"processes"`
	ProcessesUp int `json:"processes_up"`
}

// NodeStatus is one cluster member as the operations view shows it.
type NodeStatus struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Self    bool   `json:"self"`
}

// operations samples the figures and answers the view.
type operations struct {
	s        *Server
	gatherer prometheus.Gatherer // nil: metrics are off
	plugins  func() []PluginStatus
	nodes    func() []NodeStatus
	interval time.Duration
	start    sync.Once

	mu      sync.Mutex
	samples []opsSample // oldest first, at most opsHistory
}

// opsSample is one sampling's cumulative figures.
type opsSample struct {
	at            time.Time
	sockets       int
	running       int
	passivated    int
	decisions     map[string]map[string]float64 // plugin -> decision -> count
	pluginLatency map[string]histogram          // plugin -> RPC latency
	commit        histogram                     // group commits, every driver
}

// histogram is a cumulative classic histogram: count at or below each bound.
type histogram struct {
	bounds []float64
	counts []float64
	total  float64
}

func newOperations(s *Server, opts Options) *operations {
	return &operations{s: s, gatherer: opts.Gatherer, plugins: opts.Plugins, nodes: opts.Nodes, interval: opsInterval}
}

// run samples every interval until ctx ends. Serve starts it, once.
func (o *operations) run(ctx context.Context) {
	o.start.Do(func() {
		go func() {
			t := time.NewTicker(o.interval)
			defer t.Stop()
			o.sample(ctx)
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					o.sample(ctx)
				}
			}
		}()
	})
}

// sample takes one sample.
func (o *operations) sample(ctx context.Context) {
	smp := opsSample{at: time.Now(), sockets: o.s.sockets.len()}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	smp.running, smp.passivated, _ = o.s.actors.ConversationCounts(cctx)
	cancel()
	if o.gatherer != nil {
		if mfs, err := o.gatherer.Gather(); err == nil {
			o.read(&smp, mfs)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.samples = append(o.samples, smp)
	if len(o.samples) > opsHistory {
		o.samples = append(o.samples[:0], o.samples[len(o.samples)-opsHistory:]...)
	}
}

// read takes what the view shows from the gathered families.
func (o *operations) read(smp *opsSample, mfs []*dto.MetricFamily) {
	smp.decisions = map[string]map[string]float64{}
	smp.pluginLatency = map[string]histogram{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "agent_server_auth_decisions_total":
			for _, m := range mf.GetMetric() {
				plugin, decision := label(m, "plugin"), label(m, "decision")
				if smp.decisions[plugin] == nil {
					smp.decisions[plugin] = map[string]float64{}
				}
				smp.decisions[plugin][decision] += m.GetCounter().GetValue()
			}
		case "agent_server_plugin_rpc_duration_seconds":
			for _, m := range mf.GetMetric() {
				smp.pluginLatency[label(m, "plugin")] = readHistogram(m.GetHistogram())
			}
		case "agent_server_store_commit_duration_seconds":
			for _, m := range mf.GetMetric() {
				smp.commit = smp.commit.add(readHistogram(m.GetHistogram()))
			}
		}
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func readHistogram(h *dto.Histogram) histogram {
	out := histogram{total: float64(h.GetSampleCount())}
	for _, b := range h.GetBucket() {
		out.bounds = append(out.bounds, b.GetUpperBound())
		out.counts = append(out.counts, float64(b.GetCumulativeCount()))
	}
	return out
}

// add sums two histograms with the same bounds (or h empty).
func (h histogram) add(o histogram) histogram {
	if len(h.bounds) == 0 {
		return histogram{bounds: o.bounds, counts: append([]float64(nil), o.counts...), total: o.total}
	}
	for i := range h.counts {
		if i < len(o.counts) {
			h.counts[i] += o.counts[i]
		}
	}
	h.total += o.total
	return h
}

// quantile returns the q-quantile of what was observed between old and h,
// interpolated within a bucket as PromQL's histogram_quantile does, or nil
// when nothing was.
func (h histogram) quantile(old histogram, q float64) *float64 {
	total := h.total - old.total
	if total <= 0 || len(h.bounds) == 0 {
		return nil
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for i, bound := range h.bounds {
		c := h.counts[i]
		if i < len(old.counts) {
			c -= old.counts[i]
		}
		if c >= rank {
			v := bound
			if c > prevCount {
				v = prevBound + (bound-prevBound)*(rank-prevCount)/(c-prevCount)
			}
			return &v
		}
		prevBound, prevCount = bound, c
	}
	v := h.bounds[len(h.bounds)-1] // past the last bound: the +Inf bucket
	return &v
}

// opsView is the answer of GET /api/operations.
type opsView struct {
	Time            time.Time     `json:"time"`
	Version         string        `json:"version"`
	UptimeSeconds   float64       `json:"uptime_seconds"`
	IntervalSeconds float64       `json:"interval_seconds"`
	Metrics         bool          `json:"metrics"` // false under metrics.enabled: false: no decisions nor latencies
	Plugins         []opsPlugin   `json:"plugins"`
	Sockets         int           `json:"sockets"`
	Conversations   opsConvs      `json:"conversations"`
	Store           opsStore      `json:"store"`
	Nodes           []NodeStatus  `json:"nodes"`
	Series          opsSeriesJSON `json:"series"`
}

// opsPlugin is one plugin's row.
type opsPlugin struct {
	PluginStatus
	Decisions        map[string]float64 `json:"decisions"`          // allow, deny, error since start
	ErrorsLastMinute float64            `json:"errors_last_minute"` // error decisions in the last minute
	P99Seconds       *float64           `json:"p99_seconds"`        // RPC latency over the last minute; null without calls
	Failing          bool               `json:"failing"`            // not ready, or erring in the last minute
}

type opsConvs struct {
	Running    int `json:"running"`
	Passivated int `json:"passivated"`
}

type opsStore struct {
	Driver           string   `json:"driver"`
	CommitP99Seconds *float64 `json:"commit_p99_seconds"` // over the last minute; null without commits
}

// opsSeriesJSON are the charts' points, one per sample, oldest first.
// Rates are per second over the interval before each point.
type opsSeriesJSON struct {
	Time          []int64               `json:"time"` // unix milliseconds
	Sockets       []int                 `json:"sockets"`
	Conversations []int                 `json:"conversations"`
	Allowed       []float64             `json:"allowed"`
	Denied        []float64             `json:"denied"`
	Errors        []float64             `json:"errors"`
	CommitP99     []*float64            `json:"commit_p99_seconds"`
	PluginErrors  map[string][]float64  `json:"plugin_errors"`
	PluginP99     map[string][]*float64 `json:"plugin_p99_seconds"`
}

// serve answers GET /api/operations (mounted for unscoped principals only).
// Before the sampler has run (a handler served without Serve), it samples
// once itself.
func (o *operations) serve(w http.ResponseWriter, r *http.Request, _ *restCall) error {
	o.mu.Lock()
	empty := len(o.samples) == 0
	o.mu.Unlock()
	if empty {
		o.sample(r.Context())
	}
	writeJSON(w, http.StatusOK, o.view())
	return nil
}

// view builds the answer from the samples and the plugins' current state.
func (o *operations) view() opsView {
	o.mu.Lock()
	samples := append([]opsSample(nil), o.samples...)
	o.mu.Unlock()
	now := time.Now()
	v := opsView{
		Time: now.UTC(), Version: o.s.version, UptimeSeconds: now.Sub(o.s.started).Seconds(),
		IntervalSeconds: o.interval.Seconds(), Metrics: o.gatherer != nil,
		Sockets: o.s.sockets.len(), Store: opsStore{Driver: o.s.cfg.Storage.Driver}, Nodes: []NodeStatus{},
		Series: opsSeriesJSON{PluginErrors: map[string][]float64{}, PluginP99: map[string][]*float64{}},
	}
	if o.nodes != nil {
		v.Nodes = o.nodes()
	}
	var last, minuteAgo opsSample
	if n := len(samples); n > 0 {
		last, minuteAgo = samples[n-1], samples[0]
		for _, smp := range samples {
			if last.at.Sub(smp.at) >= opsWindow {
				minuteAgo = smp
			}
		}
		v.Conversations = opsConvs{Running: last.running, Passivated: last.passivated}
		v.Store.CommitP99Seconds = last.commit.quantile(minuteAgo.commit, .99)
	}
	var statuses []PluginStatus
	if o.plugins != nil {
		statuses = o.plugins()
	}
	for _, st := range statuses {
		p := opsPlugin{PluginStatus: st, Decisions: map[string]float64{"allow": 0, "deny": 0, "error": 0}}
		for d, n := range last.decisions[st.Name] {
			p.Decisions[d] = n
		}
		p.ErrorsLastMinute = last.decisions[st.Name]["error"] - minuteAgo.decisions[st.Name]["error"]
		p.P99Seconds = last.pluginLatency[st.Name].quantile(minuteAgo.pluginLatency[st.Name], .99)
		p.Failing = st.State != "ready" || p.ErrorsLastMinute > 0
		v.Plugins = append(v.Plugins, p)
		v.Series.PluginErrors[st.Name] = []float64{}
		v.Series.PluginP99[st.Name] = []*float64{}
	}
	sort.SliceStable(v.Plugins, func(i, j int) bool { return v.Plugins[i].Failing && !v.Plugins[j].Failing })
	v.Series.fill(samples, statuses)
	return v
}

// fill computes the charts' points from consecutive samples.
func (s *opsSeriesJSON) fill(samples []opsSample, plugins []PluginStatus) {
	s.Time, s.Sockets, s.Conversations = []int64{}, []int{}, []int{}
	s.Allowed, s.Denied, s.Errors, s.CommitP99 = []float64{}, []float64{}, []float64{}, []*float64{}
	for i := 1; i < len(samples); i++ {
		prev, cur := samples[i-1], samples[i]
		secs := cur.at.Sub(prev.at).Seconds()
		if secs <= 0 {
			continue
		}
		rate := func(decision string) float64 {
			var n float64
			for plugin, ds := range cur.decisions {
				n += ds[decision] - prev.decisions[plugin][decision]
			}
			return round(max(n, 0) / secs)
		}
		s.Time = append(s.Time, cur.at.UnixMilli())
		s.Sockets = append(s.Sockets, cur.sockets)
		s.Conversations = append(s.Conversations, cur.running)
		s.Allowed = append(s.Allowed, rate("allow"))
		s.Denied = append(s.Denied, rate("deny"))
		s.Errors = append(s.Errors, rate("error"))
		s.CommitP99 = append(s.CommitP99, cur.commit.quantile(prev.commit, .99))
		for _, p := range plugins {
			errs := cur.decisions[p.Name]["error"] - prev.decisions[p.Name]["error"]
			s.PluginErrors[p.Name] = append(s.PluginErrors[p.Name], round(max(errs, 0)/secs))
			s.PluginP99[p.Name] = append(s.PluginP99[p.Name], cur.pluginLatency[p.Name].quantile(prev.pluginLatency[p.Name], .99))
		}
	}
}

// round keeps three decimals, enough for a chart.
func round(x float64) float64 { return math.Round(x*1000) / 1000 }
