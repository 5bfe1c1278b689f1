package plugins

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/core"
)

// instance is one configured plugin: the core.Authenticator the chains
// hold. It runs spec.processes processes of the same binary, each with a
// supervisor of its own, and hands every call to the first live one with a
// free call slot (admission.go), so that a crash fails only the calls in
// flight in the dead process and the next call goes to a live one.
type instance struct {
	name    string
	host    *Host
	log     *slog.Logger
	procs   []*process
	metrics *instanceMetrics                       // nil measures nothing
	spans   map[core.Route][]trace.SpanStartOption // spanPluginCall's options per route, made once

	info    Info // from the first process's first start; every other must declare the same
	hasInfo bool // guarded by mu while the processes start

	mu      sync.Mutex // guards spec, gen, every process's inFlight, and waiters
	spec    spec
	gen     uint64    // the config generation: how many times a reload replaced spec
	waiters list.List // of *waiter, oldest first
}

func newInstance(h *Host, s spec) *instance {
	i := &instance{
		name:    s.name,
		host:    h,
		log:     h.log.With("plugin", s.name),
		spec:    s,
		metrics: h.metrics.instance(s.name),
	}
	for k := range max(1, s.processes) {
		p := &process{
			inst:  i,
			index: k,
			log:   i.log.With("process", k),
			kick:  make(chan struct{}, 1),
			state: StateStarting,
		}
		p.release = func() { i.release(p) }
		i.procs = append(i.procs, p)
	}
	i.spans = make(map[core.Route][]trace.SpanStartOption)
	for _, r := range []core.Route{core.RouteEvents, core.RouteREST, core.RouteRuntime} {
		i.spans[r] = i.spanOptions(r)
	}
	return i
}

// spanOptions returns the options of a spanPluginCall span on route.
func (i *instance) spanOptions(route core.Route) []trace.SpanStartOption {
	if o, ok := i.spans[route]; ok {
		return o
	}
	return []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String(attrPlugin, i.name), attribute.String(attrRoute, string(route)))}
}

// Name returns the instance name that chains refer to.
func (i *instance) Name() string { return i.name }

// Reads returns the query parameters and headers the plugin declared: the
// only ones it is ever sent.
func (i *instance) Reads() (query, headers []string) {
	return i.info.Inputs.QueryParams, i.info.Inputs.Headers
}

// declared returns what the plugin declared at boot, nil before that.
func (i *instance) declared() *Info {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.hasInfo {
		return nil
	}
	info := i.info
	return &info
}

// Authenticate skips the plugin when none of its inputs is present, answers
// from the decision cache when it can, and otherwise asks one of its
// processes with the auth.rpc_timeout deadline, after waiting for a free
// call slot if every process is busy. Any failure is Error, never Allow.
// Each call that is not skipped is a span (spanPluginCall), whose context
// travels with the call to the plugin process.
func (i *instance) Authenticate(ctx context.Context, req *core.Request) core.Result {
	in := i.info.Inputs
	if i.skips(req) {
		return core.Abstained()
	}
	ctx, span := i.host.tracer.Start(ctx, spanPluginCall, i.spanOptions(req.Route)...)
	res := i.authenticate(ctx, req, in)
	endPluginSpan(span, res)
	return res
}

// Settle answers what Authenticate would without calling a process: an
// Abstain when none of the plugin's inputs is present, or a live decision
// from the cache while the plugin is up. It makes no span: the edge asks
// only for requests that are not sampled. It counts nothing: a hit is
// counted by Settled, once the chain has used it, and a miss by the
// Authenticate that the caller runs next.
func (i *instance) Settle(req *core.Request) (core.Result, bool) {
	if i.skips(req) {
		return core.Abstained(), true
	}
	in := i.info.Inputs
	cache := i.host.cache
	if cache == nil || !i.up() {
		return core.Result{}, false
	}
	return cache.get(cache.key(i.name, req, in))
}

// skips reports whether req carries none of the plugin's declared inputs:
// the plugin abstains without being asked.
func (i *instance) skips(req *core.Request) bool {
	in := i.info.Inputs
	return !in.empty() && !in.present(req)
}

// Settled counts the cache hit that a settled chain used.
func (i *instance) Settled(res core.Result) {
	if res.Cached {
		i.metrics.cache(true)
	}
}

// Bounded marks the instance as core.Bounded: every wait in Authenticate
// (for a call slot, for the process's reply) ends with its context.
func (i *instance) Bounded() {}

// authenticate is Authenticate past the input check.
func (i *instance) authenticate(ctx context.Context, req *core.Request, in Inputs) core.Result {
	if !i.up() {
		i.metrics.failed()
		return core.Failed(fmt.Errorf("plugin %s is %s", i.name, i.health().State))
	}
	cache := i.host.cache
	var key cacheKey
	epoch := cache.currentEpoch() // before the lookup: a purge after it keeps this call's result out
	if cache != nil {
		key = cache.key(i.name, req, in)
		res, ok := cache.get(key)
		i.metrics.cache(ok)
		if ok {
			return res
		}
	}
	flat := requestToFlat(req, in)
	n := proto.Size(flat)
	if n > maxCallBytes {
		// Never sent: a message this large could end the process's
		// stream, and every call in flight on it. The request caused it,
		// so it counts toward auth.failures_per_minute; the error names
		// sizes only, never the credential.
		i.metrics.failed()
		return core.FailedByRequest(fmt.Errorf("plugin %s: the request's declared inputs take %d bytes encoded, more than the %d a plugin call may carry", i.name, n, maxCallBytes))
	}
	p, c, err := i.acquire(ctx)
	if err != nil {
		i.metrics.failed()
		return core.Failed(err)
	}
	i.host.rpcs.Add(1)
	start := time.Now()
	res := c.authenticate(ctx, start.Add(i.host.rpcTimeout), req, flat, n, in, p.release)
	i.metrics.rpc(start, res.Decision == core.Error)
	switch res.Decision {
	case core.Error:
		p.wake()
		return res
	case core.Allow:
		res.Principal.Authenticator = i.name
		if res.Principal.Expired(time.Now()) {
			res = core.Denied(core.ReasonExpired)
		}
	}
	cache.put(key, res, epoch)
	return res
}

// start launches every process: the first alone, whose Info the plugin
// keeps, then the others together.
func (i *instance) start(ctx context.Context) error {
	if err := i.procs[0].start(ctx); err != nil {
		return err
	}
	errs := make([]error, len(i.procs))
	var wg sync.WaitGroup
	for k, p := range i.procs[1:] {
		wg.Go(func() { errs[k+1] = p.start(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// start launches the process for the first time; the plugin's first
// process records the plugin's Info.
func (p *process) start(ctx context.Context) error {
	c, info, err := p.launch(ctx, true)
	if err != nil {
		p.setState(StateFailed, err)
		return err
	}
	i := p.inst
	i.mu.Lock()
	if !i.hasInfo {
		i.info, i.hasInfo = info, true
	}
	i.mu.Unlock()
	p.conn.Store(c)
	p.setState(StateReady, nil)
	return nil
}

// protocol returns the protocol a serving process negotiated; 0 when none
// serves.
func (i *instance) protocol() int {
	for _, p := range i.procs {
		if c := p.conn.Load(); c != nil {
			return c.protocol
		}
	}
	return 0
}

// health reports the plugin and each of its processes.
func (i *instance) health() Health {
	h := Health{Name: i.name, Version: i.info.Version, State: StateStopped}
	i.mu.Lock()
	inFlight := make([]int, len(i.procs))
	for k, p := range i.procs {
		inFlight[k] = p.inFlight
	}
	i.mu.Unlock()
	var lastAt time.Time
	for k, p := range i.procs {
		ph := p.health(inFlight[k])
		h.Processes = append(h.Processes, ph)
		h.Restarts += ph.Restarts
		if ph.State.rank() < h.State.rank() {
			h.State = ph.State
		}
		if ph.State == StateReady && h.PID == 0 {
			h.PID = ph.PID
		}
		p.mu.Lock()
		if p.lastErrAt.After(lastAt) {
			lastAt, h.LastError = p.lastErrAt, p.lastErr
		}
		p.mu.Unlock()
	}
	return h
}

// reconfigure makes s the instance's config and sends it to each running
// process of procs in turn. It returns the processes that took it, and the
// generation s was given: a process that started meanwhile came up with s
// under it (process.install). A process that refused keeps what it had;
// the caller then rolls the reload back (Host.Reload), so that no two
// processes serve different configs. A process that did not answer is
// restarted, since it may yet apply what it was sent. With restartRefusing
// (the rollback), a process that does not take s is taken out of service
// at once and restarted with it too: it fails closed rather than serve a
// config the host no longer holds. A process down meanwhile, or starting,
// comes up with s.
func (i *instance) reconfigure(ctx context.Context, s spec, procs []*process, restartRefusing bool) (took []*process, gen uint64, err error) {
	i.mu.Lock()
	i.spec = s
	i.gen++
	gen = i.gen
	i.mu.Unlock()
	req := ConfigureRequest{Config: s.config}
	if i.info.WantsKeys {
		req.KeyDigests, req.RuntimeKeyDigests = i.host.digests()
	}
	var errs []error
	inputsChanged := false
	for _, p := range procs {
		c := p.conn.Load()
		if c == nil || c.stale.Load() { // down, or to be restarted: it comes up with s
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, setupTimeout)
		in, err := c.rpc.configure(sctx, req)
		cancel()
		if err != nil {
			var r refusal
			refused := errors.As(err, &r)
			what := "bad plugin config"
			if !refused {
				what = "no answer to its config"
			}
			// A process that refused keeps the config it runs, which is
			// the one wanted unless this is a rollback. One that did not
			// answer (its Configure outlasted setupTimeout, or the
			// transport broke) may yet apply the config it was sent: it
			// is restarted, with the config the instance has by then.
			if restartRefusing || !refused {
				c.stale.Store(true)
				p.wake()
				err = fmt.Errorf("%w; the process is restarted", err)
			}
			errs = append(errs, fmt.Errorf("plugin %s process %d: %s: %w", i.name, p.index, what, err))
			continue
		}
		took = append(took, p)
		if in != nil && !sameInputs(*in, i.info.Inputs) && !inputsChanged {
			inputsChanged = true
			errs = append(errs, fmt.Errorf("plugin %s: the new config changes the inputs it reads; restart the server to apply it", i.name))
		}
	}
	return took, gen, errors.Join(errs...)
}

// startedWith returns the processes in service with the config of
// generation gen: those that came up with it while a reload was sending
// it to the others.
func (i *instance) startedWith(gen uint64) []*process {
	var out []*process
	for _, p := range i.procs {
		if c := p.conn.Load(); c != nil && c.gen == gen {
			out = append(out, p)
		}
	}
	return out
}

// supervise runs every process's supervisor until ctx ends.
func (i *instance) supervise(ctx context.Context, wg *sync.WaitGroup) {
	for _, p := range i.procs {
		wg.Go(func() { p.supervise(ctx) })
	}
}

// stop kills every process; the supervisors have already been stopped.
func (i *instance) stop() {
	var wg sync.WaitGroup
	for _, p := range i.procs {
		wg.Go(p.stop)
	}
	wg.Wait()
	i.processDown()
}

var (
	_ core.Authenticator = (*instance)(nil)
	_ core.Reader        = (*instance)(nil)
	_ core.Settler       = (*instance)(nil)
	_ core.Bounded       = (*instance)(nil)
)
