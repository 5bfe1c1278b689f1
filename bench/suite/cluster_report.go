package suite

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/bench/target"
)

// The cluster targets of the cluster issue, on cluster/single.
const (
	clusterFanoutGoal  = 0.5 // delivered msgs/s, the nodes sharing the machine's cores
	clusterConnectGoal = 0.8 // connects/s through a node that does not own the conversation
)

// derive returns the reported figures of m: the single-node suite's for a
// fan-out or a connect, with the cluster issue's targets on the
// cluster/single ratio; the trial's for a recovery or a cluster storm.
func (m *ClusterMeasurement) derive() []metric {
	if m.metrics != nil || m.Result == nil {
		return m.metrics
	}
	var out []metric
	switch r := m.Result.(type) {
	case *load.FanoutResult, *load.ConnectResult:
		base := Measurement{Case: m.Case, Result: r, ServerErrorLines: m.ServerErrorLines}
		for _, x := range base.derive() {
			x.goal = nil
			switch {
			case x.name == "delivered msgs/s" && m.Case == CaseClusterFanout:
				x.goal = &goal{ratio: true, bound: clusterFanoutGoal}
			case x.name == "connects/s":
				x.goal = &goal{ratio: true, bound: clusterConnectGoal}
			case x.name == "errors" || x.name == "lost + duplicated":
				x.goal = &goal{le: true, bound: 0}
			case x.name == "server CPU busy":
				x.name = "server CPU busy (all nodes, % of one core)"
			}
			out = append(out, x)
			if f, ok := r.(*load.FanoutResult); ok && x.name == "lost + duplicated" {
				out = append(out, metric{name: "reordered (log order is not send order)", unit: "count", value: float64(f.Reordered), better: -1})
			}
		}
		out = append(out, metric{name: "server ERROR log lines", unit: "count", value: float64(m.ServerErrorLines), better: -1})
	case *load.RecoveryResult:
		out = append(out,
			metric{name: "time to recovery", unit: "ms", value: ms(r.Recovery), better: -1},
			metric{name: "post through a survivor acknowledged", unit: "ms", value: ms(r.Acknowledged), better: -1},
			metric{name: "last resumed socket reattached", unit: "ms", value: ms(r.Reattached), better: -1},
			metric{name: "slowest post, first attempt to acknowledgement", unit: "ms", value: ms(r.SlowestPost), better: -1},
			metric{name: "conversations the killed node owned", unit: "count", value: float64(r.VictimOwned)},
			metric{name: "sockets resumed with after_id", unit: "count", value: float64(r.Resumed)},
			metric{name: "posts acknowledged", unit: "count", value: float64(r.Posts)},
			metric{name: "posts acknowledged after a retry", unit: "count", value: float64(r.Retried)},
			metric{name: "acknowledged posts lost", unit: "count", value: float64(r.Lost), better: -1, goal: &goal{le: true, bound: 0}},
			metric{name: "posts duplicated in the log", unit: "count", value: float64(r.Duplicated), better: -1, goal: &goal{le: true, bound: 0}},
			metric{name: "sockets not matching the log", unit: "count", value: float64(r.Mismatched), better: -1, goal: &goal{le: true, bound: 0}},
			metric{name: "conversations with rows != max(seq)", unit: "count", value: float64(m.StoreGaps), better: -1, goal: &goal{le: true, bound: 0}},
			metric{name: "errors", unit: "count", value: float64(r.Errors), better: -1, goal: &goal{le: true, bound: 0}},
		)
	case *load.ClusterStormResult:
		out = clusterStormMetrics(r, m)
	}
	m.metrics = out
	return out
}

// clusterStormMetrics are a cluster storm trial's figures, on either side.
func clusterStormMetrics(r *load.ClusterStormResult, m *ClusterMeasurement) []metric {
	nan := math.NaN()
	all, owned, hits := nan, nan, nan
	if r.Resumed == r.Dropped {
		all = ms(r.AllResumed)
	}
	if r.VictimOwned >= 0 {
		owned = float64(r.VictimOwned)
	}
	if r.CacheHits >= 0 {
		hits = r.CacheHits
	}
	out := []metric{
		{name: "clients dropped (on the killed node)", unit: "count", value: float64(r.Dropped)},
		{name: "clients not resumed", unit: "count", value: float64(r.Dropped - r.Resumed), better: -1, goal: &goal{le: true, bound: 0}},
		{name: "time from the drop until all resumed", unit: "ms", value: all, better: -1},
		{name: "time to resume p50", unit: "ms", value: ms(r.Resume.P50), better: -1},
		{name: "time to resume p99", unit: "ms", value: ms(r.Resume.P99), better: -1},
		{name: "reconnects/s", unit: "rate", value: r.ReconnectsPerSecond, better: +1},
		{name: "lost + duplicated", unit: "count", value: float64(r.Lost + r.Duplicates), better: -1, goal: &goal{le: true, bound: 0}},
		{name: "reordered", unit: "count", value: float64(r.Reordered), better: -1},
	}
	for _, k := range load.StormErrorKinds {
		out = append(out, metric{name: "errors: " + k, unit: "count", value: float64(r.ErrorsByKind[k]), better: -1})
	}
	return append(out,
		metric{name: "JWT cache hits on the reconnects", unit: "count", value: hits, better: -1, goal: &goal{le: true, bound: 0}},
		metric{name: "server CPU per reconnect (live nodes, posting included)", unit: "us", value: per(r.CPU.Server, r.Dropped), better: -1},
		metric{name: "conversations the killed node owned", unit: "count", value: owned},
		metric{name: "slowest post, first attempt to acknowledgement", unit: "ms", value: ms(r.SlowestPost), better: -1},
		metric{name: "posts acknowledged after a retry", unit: "count", value: float64(r.PostsRetried)},
		metric{name: "conversations with rows != max(seq)", unit: "count", value: float64(m.StoreGaps), better: -1, goal: &goal{le: true, bound: 0}},
		metric{name: "server ERROR log lines", unit: "count", value: float64(m.ServerErrorLines), better: -1},
	)
}

// line is the progress line of m.
func (m *ClusterMeasurement) line() string {
	return progressLine(fmt.Sprintf("run %d %-20s %-7s %6.1fs", m.Run, m.Case, m.Side, m.Took.Seconds()), m.derive(), m.Err, m.firstErrors())
}

// firstErrors are the first error texts a scenario kept.
func (m *ClusterMeasurement) firstErrors() []string {
	switch r := m.Result.(type) {
	case *load.RecoveryResult:
		return r.FirstErrors
	case *load.ClusterStormResult:
		return r.FirstErrors
	}
	return (&Measurement{Result: m.Result}).firstErrors()
}

// The sides as rows key them.
const (
	kindCluster = target.Kind(SideCluster)
	kindSingle  = target.Kind(SideSingle)
)

// rows aggregates the measurements, in case order then metric order.
func (r *ClusterReport) rows() []*row {
	return aggregate(ClusterCases, len(r.Measurements), func(i int) (string, target.Kind, int, []metric) {
		m := &r.Measurements[i]
		return m.Case, target.Kind(m.Side), m.Run, m.derive()
	})
}

// clusterRatio is cluster/single of the medians, with the range of the
// run by run ratios; empty when it means nothing. (Once main's
// row.ratioText(a, b) is here, this is rw.ratioText(kindCluster, kindSingle).)
func clusterRatio(rw *row) string {
	c, s := summarize(rw.values[kindCluster]), summarize(rw.values[kindSingle])
	u := rw.metric.unit
	if c.n == 0 || s.n == 0 || s.med == 0 || rw.metric.noRatio || u == "count" || u == "%" || u == "s" {
		return ""
	}
	out := fmt.Sprintf("%.2fx", c.med/s.med)
	single := map[int]float64{}
	for i, run := range rw.runs[kindSingle] {
		single[run] = rw.values[kindSingle][i]
	}
	var paired []float64
	for i, run := range rw.runs[kindCluster] {
		if b, ok := single[run]; ok && b != 0 {
			paired = append(paired, rw.values[kindCluster][i]/b)
		}
	}
	if pr := summarize(paired); pr.n > 1 {
		out += fmt.Sprintf(" (%.2f-%.2f)", pr.min, pr.max)
	}
	return out
}

// clusterVerdict says whether the row's goal is met: a ratio of the
// medians, or every cluster run within the bound.
func clusterVerdict(rw *row) string {
	g := rw.metric.goal
	if g == nil {
		return ""
	}
	c := summarize(rw.values[kindCluster])
	if c.n == 0 {
		return "n/a"
	}
	v := c.max
	if g.ratio {
		s := summarize(rw.values[kindSingle])
		if s.n == 0 || s.med == 0 {
			return "n/a"
		}
		v = c.med / s.med
	}
	if g.met(v) {
		return "met"
	}
	return "**missed**"
}

// Markdown writes the comparison table, then the recovery table.
func (r *ClusterReport) Markdown(w io.Writer) {
	var cmp, rec []*row
	for _, rw := range r.rows() {
		if rw.caseName == CaseRecovery {
			rec = append(rec, rw)
		} else {
			cmp = append(cmp, rw)
		}
	}
	if len(cmp) > 0 {
		fmt.Fprintln(w, "| case | metric | cluster | single node | cluster/single | target | |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---|---|")
		last := ""
		for _, rw := range cmp {
			name := ""
			if rw.caseName != last {
				name, last = r.caseLabel(rw.caseName), rw.caseName
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", name, rw.metric.name,
				spread(rw.metric.unit, summarize(rw.values[kindCluster])), spread(rw.metric.unit, summarize(rw.values[kindSingle])),
				clusterRatio(rw), goalText(rw.metric.goal), clusterVerdict(rw))
		}
	}
	if len(rec) > 0 {
		if len(cmp) > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s:\n\n", r.caseLabel(CaseRecovery))
		fmt.Fprintln(w, "| metric | median | worst | trials | target | |")
		fmt.Fprintln(w, "|---|---:|---:|---|---|---|")
		for _, rw := range rec {
			v := rw.values[kindCluster]
			st := summarize(v)
			worst := st.max
			if rw.metric.better > 0 {
				worst = st.min
			}
			var each []string
			for _, x := range v {
				each = append(each, bare(rw.metric.unit, x))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", rw.metric.name, format(rw.metric.unit, st.med), format(rw.metric.unit, worst),
				strings.Join(each, ", "), goalText(rw.metric.goal), clusterVerdict(rw))
		}
	}
	r.notes(w, true)
}

func goalText(g *goal) string {
	if g == nil {
		return ""
	}
	return g.String()
}

// Text writes the results as plain text.
func (r *ClusterReport) Text(w io.Writer) {
	last := ""
	for _, rw := range r.rows() {
		if rw.caseName != last {
			fmt.Fprintf(w, "\n%s\n", r.caseLabel(rw.caseName))
			last = rw.caseName
		}
		fmt.Fprintf(w, "  %-44s", rw.metric.name)
		for _, side := range []target.Kind{kindCluster, kindSingle} {
			if len(rw.values[side]) > 0 {
				fmt.Fprintf(w, "  %s %-30s", side, spread(rw.metric.unit, summarize(rw.values[side])))
			}
		}
		if t := clusterRatio(rw); t != "" {
			fmt.Fprintf(w, "  ratio %s", t)
		}
		if v := clusterVerdict(rw); v != "" {
			fmt.Fprintf(w, "  [%s: %s]", rw.metric.goal, strings.Trim(v, "*"))
		}
		fmt.Fprintln(w)
	}
	r.notes(w, false)
}

// notes lists failed measurements and the first errors of the others.
func (r *ClusterReport) notes(w io.Writer, short bool) {
	for _, m := range r.Measurements {
		note(w, m.Run, m.Case, m.Side, m.Err, m.firstErrors(), short)
	}
}

// JSON writes every measurement.
func (r *ClusterReport) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// caseLabel describes a cluster case with its parameters.
func (r *ClusterReport) caseLabel(c string) string {
	cfg := r.Config
	p := cfg.Params
	switch c {
	case CaseClusterFanout:
		return fmt.Sprintf("cluster-fanout: %d subscribers (evenly over %d nodes), %d msgs of %d B back to back from a socket on a node that does not own the conversation", p.Subs, cfg.Nodes, p.Msgs, p.Size)
	case CaseClusterFanoutPaced:
		return fmt.Sprintf("cluster-fanout-paced: the same, %d msgs at %g/s", p.PacedMsgs, p.PacedRate)
	case CaseClusterConnect:
		return fmt.Sprintf("cluster-connect: %d conns, %d at once, through a node that does not own the conversation", p.ConnectN, p.ConnectC)
	case CaseRecovery:
		rp := cfg.Recovery
		trials := 0
		for _, m := range r.Measurements {
			if m.Case == CaseRecovery {
				trials++
			}
		}
		return fmt.Sprintf("recovery: %d conversations owned in turn by the %d nodes, %d sockets on each through every node, %d REST writers at %g posts/s in all; SIGKILL one node; %d trials, a fresh cluster each, the node killed in turn",
			rp.Conversations, cfg.Nodes, rp.ReadersPerNode, rp.Writers, rp.Rate, trials)
	case CaseClusterStorm:
		s := cfg.Params.Storm
		return fmt.Sprintf("cluster-storm: %d clients, a distinct JWT each, spread over the %d nodes, %d per conversation, %g events/s each over REST; SIGKILL one node (in turn by trial), whose clients resume with after_id on the survivors after [0, %s] (single node: the same share drop their sockets %s after connecting and resume on it); %d trials, a fresh cluster and single node each",
			s.N, cfg.Nodes, s.PerConversation, s.Rate, s.Jitter, s.Hold, cfg.StormTrials)
	}
	return c
}
