package suite

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/bench/target"
)

// Report is a finished (or interrupted) benchmark.
type Report struct {
	Config       Config        `json:"-"`
	Started      time.Time     `json:"started"`
	Finished     time.Time     `json:"finished"`
	Measurements []Measurement `json:"measurements"`
}

// metric is one figure derived from a scenario result.
type metric struct {
	name   string
	unit   string // how value is printed: see format
	value  float64
	better int   // +1 higher is better, -1 lower is better, 0 neither
	goal   *goal // the target, if any
	// noRatio leaves out ours/baseline: for a difference near zero on
	// either side, a ratio says nothing.
	noRatio bool
}

// goal is a target: a bound on the ours/baseline ratio, or on our own
// value.
type goal struct {
	ratio bool    // a bound on ours/baseline; else on agent-server's value
	le    bool    // value must be <= bound; else >= bound
	bound float64 // the bound
}

func (g *goal) String() string {
	op := ">="
	if g.le {
		op = "<="
	}
	if g.ratio {
		return fmt.Sprintf("ratio %s %sx", op, strconv.FormatFloat(g.bound, 'f', -1, 64))
	}
	return fmt.Sprintf("%s %s", op, strconv.FormatFloat(g.bound, 'f', -1, 64))
}

func (g *goal) met(v float64) bool {
	if g.le {
		return v <= g.bound
	}
	return v >= g.bound
}

// per is d in microseconds per one of n, NaN when either is zero.
func per(d time.Duration, n int) float64 {
	if n == 0 || d == 0 {
		return math.NaN()
	}
	return float64(d.Microseconds()) / float64(n)
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// metrics derives the reported figures of m.
func (m *Measurement) derive() []metric {
	if m.metrics != nil || m.Result == nil {
		return m.metrics
	}
	busy := func(u load.CPUUse, elapsed time.Duration) []metric {
		if elapsed <= 0 {
			return nil
		}
		srv := math.NaN()
		if u.Server > 0 {
			srv = 100 * u.Server.Seconds() / elapsed.Seconds()
		}
		return []metric{
			{name: "server CPU busy", unit: "%", value: srv},
			{name: "generator CPU busy", unit: "%", value: 100 * u.Generator.Seconds() / elapsed.Seconds()},
		}
	}
	var out []metric
	switch r := m.Result.(type) {
	case *load.ConnectResult:
		noun, ready := "connects/s", "time to ready"
		if m.Case == CaseReject {
			noun, ready = "rejections/s", "time to 401"
		}
		rate := metric{name: noun, unit: "rate", value: r.PerSecond, better: +1}
		if m.Case == CaseConnect {
			rate.goal = &goal{ratio: true, bound: 0.7}
		}
		out = append(out, rate,
			metric{name: ready + " p50", unit: "ms", value: ms(r.TimeToReady.P50), better: -1},
			metric{name: ready + " p99", unit: "ms", value: ms(r.TimeToReady.P99), better: -1},
			metric{name: "server CPU per connection", unit: "us", value: per(r.CPU.Server, r.OK), better: -1},
			metric{name: "errors", unit: "count", value: float64(r.Errors), better: -1, goal: &goal{le: true, bound: 0}},
		)
		out = append(out, busy(r.CPU, r.Elapsed)...)
	case *load.FanoutResult:
		out = append(out,
			metric{name: "delivered msgs/s", unit: "rate", value: r.PerSecond, better: +1, goal: &goal{ratio: true, bound: 0.7}},
			metric{name: "latency p50", unit: "ms", value: ms(r.Latency.P50), better: -1},
			metric{name: "latency p99", unit: "ms", value: ms(r.Latency.P99), better: -1, goal: &goal{ratio: true, le: true, bound: 1.5}},
			metric{name: "server CPU per delivery", unit: "us", value: per(r.CPU.Server, r.Delivered), better: -1},
			metric{name: "lost + duplicated", unit: "count", value: float64(r.Lost + r.Duplicates), better: -1, goal: &goal{le: true, bound: 0}},
			metric{name: "errors", unit: "count", value: float64(r.Errors), better: -1, goal: &goal{le: true, bound: 0}},
		)
		out = append(out, busy(r.CPU, r.Elapsed)...)
	case *load.IdleResult:
		out = append(out,
			metric{name: "RSS per connection", unit: "KiB", value: r.BytesPerConn / 1024, better: -1, goal: &goal{ratio: true, le: true, bound: 1.5}},
			metric{name: "RssAnon per connection", unit: "KiB", value: r.AnonPerConn / 1024, better: -1},
			metric{name: "connections held", unit: "count", value: float64(r.Held), better: +1, goal: &goal{bound: float64(r.N)}},
			metric{name: "RSS before", unit: "MiB", value: mib(r.Before.RSS), better: -1},
			metric{name: "RSS holding them", unit: "MiB", value: mib(r.After.RSS), better: -1},
		)
	case *load.ChurnResult:
		ratio := func(a, b int64) float64 {
			if b <= 0 {
				return math.NaN()
			}
			return float64(a) / float64(b)
		}
		out = append(out,
			metric{name: "connections", unit: "count", value: float64(r.Attempts), better: 0},
			metric{name: "errors", unit: "count", value: float64(r.Errors), better: -1, goal: &goal{le: true, bound: 0}},
			metric{name: "cycle p99 (connect, send, echo)", unit: "ms", value: ms(r.Cycle.P99), better: -1},
			metric{name: "server CPU per connection", unit: "us", value: per(r.CPU.Server, r.Attempts), better: -1},
			metric{name: "RSS at start", unit: "MiB", value: mib(r.Start.RSS), better: -1},
			metric{name: "RSS at end", unit: "MiB", value: mib(r.End.RSS), better: -1},
			metric{name: "RSS settled / start", unit: "x", value: ratio(r.Settled.RSS, r.Start.RSS), better: -1, goal: &goal{le: true, bound: 1.1}},
			metric{name: "RssAnon settled / start", unit: "x", value: ratio(r.Settled.Anon, r.Start.Anon), better: -1, goal: &goal{le: true, bound: 1.1}},
			metric{name: "RssFile settled - start", unit: "MiB", value: mib(r.Settled.File - r.Start.File), better: -1, noRatio: true},
			metric{name: "settled after", unit: "s", value: r.SettledIn.Seconds(), better: -1},
			metric{name: "server ERROR log lines", unit: "count", value: float64(m.ServerErrorLines), better: -1},
		)
		out = append(out, busy(r.CPU, r.Elapsed)...)
	case *load.StormResult:
		out = append(out, stormMetrics(r, ms, per)...)
		out = append(out, busy(r.CPU, r.Storm)...)
	}
	m.metrics = out
	return out
}

// stormMetrics are the reconnect storm's figures.
func stormMetrics(r *load.StormResult, ms func(time.Duration) float64, per func(time.Duration, int) float64) []metric {
	all := math.NaN()
	if r.Resumed == r.Clients {
		all = ms(r.AllResumed)
	}
	hits := math.NaN()
	if r.CacheHits >= 0 {
		hits = r.CacheHits
	}
	slower := math.NaN()
	if r.Quiet.P99 > 0 && r.StormLatency.Count > 0 {
		slower = float64(r.StormLatency.P99) / float64(r.Quiet.P99)
	}
	out := []metric{
		{name: "clients resumed", unit: "count", value: float64(r.Resumed), better: +1, goal: &goal{bound: float64(r.Clients)}},
		{name: "time until all resumed", unit: "ms", value: all, better: -1, goal: &goal{ratio: true, le: true, bound: 1.5}},
		{name: "time to resume p50", unit: "ms", value: ms(r.Resume.P50), better: -1},
		{name: "time to resume p99", unit: "ms", value: ms(r.Resume.P99), better: -1},
		{name: "server CPU per reconnect (deliveries included)", unit: "us", value: per(r.CPU.Server, r.Clients), better: -1},
		{name: "server CPU per reconnect, background subtracted", unit: "us", value: per(r.ReconnectCPU(), r.Clients), better: -1},
		{name: "lost + duplicated", unit: "count", value: float64(r.Lost + r.Duplicates), better: -1, goal: &goal{le: true, bound: 0}},
	}
	for _, k := range load.StormErrorKinds {
		out = append(out, metric{name: "errors: " + k, unit: "count", value: float64(r.ErrorsByKind[k]), better: -1})
	}
	return append(out,
		metric{name: "JWT cache hits in the storm", unit: "count", value: hits, better: -1, goal: &goal{le: true, bound: 0}},
		metric{name: "paced fan-out p99, quiet", unit: "ms", value: ms(r.Quiet.P99), better: -1},
		metric{name: "paced fan-out p99, storm", unit: "ms", value: ms(r.StormLatency.P99), better: -1},
		metric{name: "paced fan-out p99 storm/quiet", unit: "x", value: slower, better: -1, goal: &goal{le: true, bound: 3}, noRatio: true},
	)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// line is the progress line of m.
func (m *Measurement) line() string {
	return progressLine(fmt.Sprintf("run %d %-12s %-12s %6.1fs", m.Run, m.Case, m.Target, m.Took.Seconds()), m.derive(), m.Err, m.firstErrors())
}

// progressLine is head, then every metric, then the error or the first
// error the scenario kept.
func progressLine(head string, ms []metric, err string, first []string) string {
	var b strings.Builder
	b.WriteString(head)
	for _, x := range ms {
		fmt.Fprintf(&b, "  %s=%s", x.name, format(x.unit, x.value))
	}
	if err != "" {
		fmt.Fprintf(&b, "  ERROR: %s", firstLine(err))
	} else if len(first) > 0 {
		fmt.Fprintf(&b, "  first error: %s", firstLine(first[0]))
	}
	return b.String()
}

// row is one metric of one case over every run, for every target.
type row struct {
	caseName string
	metric   metric                    // name, unit, better, goal of the first seen
	values   map[target.Kind][]float64 // by run order
	runs     map[target.Kind][]int
}

// rows aggregates the measurements, in case order then metric order.
func (r *Report) rows() []*row {
	return aggregate(Cases, len(r.Measurements), func(i int) (string, target.Kind, int, []metric) {
		m := &r.Measurements[i]
		return m.Case, m.Target, m.Run, m.derive()
	})
}

// aggregate gathers n measurements' metrics into rows, in the order of
// cases, then of the metrics; at returns measurement i's case, who was
// measured, its run and its metrics.
func aggregate(cases []string, n int, at func(i int) (c string, who target.Kind, run int, ms []metric)) []*row {
	var out []*row
	index := map[string]*row{}
	for _, c := range cases {
		for i := range n {
			mc, who, run, ms := at(i)
			if mc != c {
				continue
			}
			for _, x := range ms {
				key := c + "\x00" + x.name
				rw := index[key]
				if rw == nil {
					rw = &row{caseName: c, metric: x, values: map[target.Kind][]float64{}, runs: map[target.Kind][]int{}}
					index[key] = rw
					out = append(out, rw)
				}
				rw.values[who] = append(rw.values[who], x.value)
				rw.runs[who] = append(rw.runs[who], run)
			}
		}
	}
	return out
}

// stats are the median and range of values, NaNs left out.
type stats struct {
	n             int
	med, min, max float64
}

func summarize(values []float64) stats {
	v := slices.DeleteFunc(slices.Clone(values), math.IsNaN)
	if len(v) == 0 {
		return stats{med: math.NaN(), min: math.NaN(), max: math.NaN()}
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stats{n: len(v), med: med, min: v[0], max: v[len(v)-1]}
}

// comparison is a ratio column: target a's figures over b's.
type comparison struct {
	a, b  target.Kind
	title string
}

// comparisons are the ratio columns the report's targets allow:
// ours/baseline, and metrics on/off when agent-server ran both ways.
func (r *Report) comparisons() []comparison {
	has := func(k target.Kind) bool { return slices.Contains(r.Config.Targets, k) }
	var out []comparison
	if has(target.AgentServer) && has(target.Baseline) {
		out = append(out, comparison{target.AgentServer, target.Baseline, "ours/baseline"})
	}
	if has(target.AgentServer) && has(target.AgentServerNoMetrics) {
		out = append(out, comparison{target.AgentServer, target.AgentServerNoMetrics, "metrics on/off"})
	}
	return out
}

// pairedRatios are a/b run by run.
func (rw *row) pairedRatios(a, b target.Kind) []float64 {
	ours, base := rw.values[a], rw.values[b]
	byRun := map[int]float64{}
	for i, run := range rw.runs[b] {
		byRun[run] = base[i]
	}
	var out []float64
	for i, run := range rw.runs[a] {
		if b, ok := byRun[run]; ok && b != 0 {
			out = append(out, ours[i]/b)
		}
	}
	return out
}

// verdict says whether the row's goal is met, and by what figure.
func (rw *row) verdict() string {
	g := rw.metric.goal
	if g == nil {
		return ""
	}
	var v float64
	if g.ratio {
		o, b := summarize(rw.values[target.AgentServer]), summarize(rw.values[target.Baseline])
		if o.n == 0 || b.n == 0 || b.med == 0 {
			return "n/a"
		}
		v = o.med / b.med
	} else {
		o := summarize(rw.values[target.AgentServer])
		if o.n == 0 {
			return "n/a"
		}
		v = o.med
		if !g.le && g.bound > 0 && o.min < g.bound {
			v = o.min // "held N": every run must hold
		} else if g.le {
			v = o.max // "zero errors", "RSS back": every run must pass
		}
	}
	if g.met(v) {
		return "met"
	}
	return "**missed**"
}

// Markdown writes the results table.
func (r *Report) Markdown(w io.Writer) {
	kinds, cmps := r.Config.Targets, r.comparisons()
	fmt.Fprintf(w, "| case | metric |")
	for _, k := range kinds {
		fmt.Fprintf(w, " %s |", k)
	}
	for _, c := range cmps {
		fmt.Fprintf(w, " %s |", c.title)
	}
	fmt.Fprintln(w, " target | |")
	fmt.Fprint(w, "|---|---|")
	for range len(kinds) + len(cmps) {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w, "---|---|")
	last := ""
	for _, rw := range r.rows() {
		name := ""
		if rw.caseName != last {
			name, last = r.caseLabel(rw.caseName), rw.caseName
		}
		fmt.Fprintf(w, "| %s | %s |", name, rw.metric.name)
		for _, k := range kinds {
			fmt.Fprintf(w, " %s |", spread(rw.metric.unit, summarize(rw.values[k])))
		}
		for _, c := range cmps {
			fmt.Fprintf(w, " %s |", rw.ratioText(c.a, c.b))
		}
		g := ""
		if rw.metric.goal != nil {
			g = rw.metric.goal.String()
		}
		fmt.Fprintf(w, " %s | %s |\n", g, rw.verdict())
	}
	r.notes(w, true)
}

// notes lists failed measurements and the first errors of the others.
func (r *Report) notes(w io.Writer, short bool) {
	for _, m := range r.Measurements {
		note(w, m.Run, m.Case, string(m.Target), m.Err, m.firstErrors(), short)
	}
}

// note is one measurement's note: its error (its first line when short),
// else the first errors its scenario kept; nothing when it has neither.
func note(w io.Writer, run int, c, who, err string, first []string, short bool) {
	if err != "" && short {
		err = firstLine(err)
	}
	switch {
	case err != "":
		fmt.Fprintf(w, "\nrun %d, %s, %s failed: %s\n", run, c, who, err)
	case len(first) > 0:
		fmt.Fprintf(w, "\nrun %d, %s, %s: first errors: %s\n", run, c, who, strings.Join(first, "; "))
	}
}

// firstErrors are the first error texts a scenario kept.
func (m *Measurement) firstErrors() []string {
	switch r := m.Result.(type) {
	case *load.ConnectResult:
		return r.FirstErrors
	case *load.FanoutResult:
		return r.FirstErrors
	case *load.IdleResult:
		return r.FirstErrors
	case *load.ChurnResult:
		return r.FirstErrors
	case *load.StormResult:
		return r.FirstErrors
	}
	return nil
}

// ratioText is the ratio of a's and b's medians, with the range of the
// per-run ratios.
func (rw *row) ratioText(ka, kb target.Kind) string {
	o, b := summarize(rw.values[ka]), summarize(rw.values[kb])
	if o.n == 0 || b.n == 0 || b.med == 0 || rw.metric.noRatio || rw.metric.unit == "count" || rw.metric.unit == "%" || rw.metric.unit == "s" {
		return ""
	}
	s := fmt.Sprintf("%.2fx", o.med/b.med)
	if pr := summarize(rw.pairedRatios(ka, kb)); pr.n > 1 {
		s += fmt.Sprintf(" (%.2f-%.2f)", pr.min, pr.max)
	}
	return s
}

// caseLabel describes a case with its parameters.
func (r *Report) caseLabel(c string) string {
	p := r.Config.Params
	switch c {
	case CaseConnect:
		return fmt.Sprintf("connect: %d conns, %d at once, one %s key (cached)", p.ConnectN, p.ConnectC, p.Auth)
	case CaseConnectJWT:
		return fmt.Sprintf("connect-jwt: %d conns, %d at once, a distinct JWT each (uncached)", p.JWTN, p.ConnectC)
	case CaseReject:
		return fmt.Sprintf("reject: %d wrong-key handshakes, %d at once", p.ConnectN, p.ConnectC)
	case CaseFanout:
		return fmt.Sprintf("fanout: %d subscribers, %d msgs of %d B back to back", p.Subs, p.Msgs, p.Size)
	case CaseFanoutPaced:
		return fmt.Sprintf("fanout-paced: %d subscribers, %d msgs of %d B at %g/s", p.Subs, p.PacedMsgs, p.Size, p.PacedRate)
	case CaseIdle:
		return fmt.Sprintf("idle: %d conns held %s", p.IdleN, p.IdleHold)
	case CaseChurn:
		return fmt.Sprintf("churn: %g conns/s for %s", p.ChurnRate, p.ChurnDuration)
	case CaseStorm:
		s := p.Storm
		where := "in the generator"
		if len(r.Config.ObserverCmd) > 0 {
			where = "in a process of its own"
		}
		return fmt.Sprintf("reconnect-storm: %d clients, a distinct JWT each, %d per conversation, %g events/s each; all drop, resume with after_id after [0, %s]; paced fan-out to %d others at %g/s, %s",
			s.N, s.PerConversation, s.Rate, s.Jitter, s.QuietSubs, s.QuietRate, where)
	}
	return c
}

// Text writes the results as aligned plain text.
func (r *Report) Text(w io.Writer) {
	last := ""
	for _, rw := range r.rows() {
		if rw.caseName != last {
			fmt.Fprintf(w, "\n%s\n", r.caseLabel(rw.caseName))
			last = rw.caseName
		}
		fmt.Fprintf(w, "  %-34s", rw.metric.name)
		for _, k := range r.Config.Targets {
			fmt.Fprintf(w, "  %s %-30s", k, spread(rw.metric.unit, summarize(rw.values[k])))
		}
		for _, c := range r.comparisons() {
			if t := rw.ratioText(c.a, c.b); t != "" {
				fmt.Fprintf(w, "  %s %s", c.title, t)
			}
		}
		if v := rw.verdict(); v != "" {
			fmt.Fprintf(w, "  [%s: %s]", rw.metric.goal, strings.Trim(v, "*"))
		}
		fmt.Fprintln(w)
	}
	r.notes(w, false)
}

// JSON writes every measurement.
func (r *Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// spread is "median [min-max]" in unit, or just the value for one run.
func spread(unit string, s stats) string {
	if s.n == 0 {
		return "-"
	}
	if s.n == 1 || s.min == s.max {
		return format(unit, s.med)
	}
	return fmt.Sprintf("%s [%s-%s]", format(unit, s.med), bare(unit, s.min), bare(unit, s.max))
}

// format prints v in unit.
func format(unit string, v float64) string {
	b := bare(unit, v)
	switch unit {
	case "ms", "us", "KiB", "MiB", "s":
		return b + " " + strings.Replace(unit, "us", "µs", 1)
	case "x":
		return b + "x"
	case "%":
		return b + "%"
	}
	return b
}

// bare prints v without its unit.
func bare(unit string, v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	switch unit {
	case "rate", "count":
		return thousands(int64(math.Round(v)))
	case "ms", "us":
		if v >= 100 {
			return strconv.FormatFloat(v, 'f', 0, 64)
		}
		if v >= 10 {
			return strconv.FormatFloat(v, 'f', 1, 64)
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	case "x":
		return strconv.FormatFloat(v, 'f', 2, 64)
	case "%":
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// thousands prints n with commas.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
