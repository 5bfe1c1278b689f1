package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// defaults are config.Default()'s, for the settings a config leaves at
// zero: one place says what they are.
var defaults = config.Default()

// Host launches, configures and supervises the authenticator plugins a
// config names, and compiles the per-route chains from them.
//
// Lifecycle: NewHost (no side effects), Start, then Chain per route, Ready
// for readiness, Purge or Reload on config reload, and Close on shutdown.
type Host struct {
	log              *slog.Logger
	protocolVersions []uint // the versions it accepts, oldest first
	rpcTimeout       time.Duration
	restart          config.Restart
	hangGrace        time.Duration // rpcTimeout plus hangMargin (see hangMargin)
	queueSize        int           // auth.queue.size
	queueMaxWait     time.Duration // auth.queue.max_wait
	queued           atomic.Int64  // calls waiting for a slot, every plugin's
	cache            *decisionCache
	rpcs             atomic.Int64 // Authenticate RPCs sent, for tests and metrics
	metrics          *hostMetrics // nil measures nothing
	tracer           trace.Tracer // one span per plugin call

	cfg       config.Config
	mu        sync.Mutex // guards keys, instances, chains, cancel, closed
	keys      []string   // session API keys as "sha256:<hex>" digests
	runtime   []string   // agent runtime keys (auth.runtime_keys), the same way
	instances map[string]*instance
	order     []string
	chains    map[core.Route]*core.Chain
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closed    bool
}

// HostOption instruments a Host.
type HostOption func(*hostOptions)

type hostOptions struct {
	metrics prometheus.Registerer
	tracing trace.TracerProvider
}

// WithMetrics registers the host's collectors (plugin RPC latency and
// errors, plugin up, restarts and version, cache hits and misses) with reg.
// Without it, or with a nil reg, nothing is measured.
func WithMetrics(reg prometheus.Registerer) HostOption {
	return func(o *hostOptions) { o.metrics = reg }
}

// WithTracerProvider makes the host trace every plugin call with tp, and
// send the trace context to the plugin process in the call's gRPC metadata
// (with the global propagator). Without it nothing is traced.
func WithTracerProvider(tp trace.TracerProvider) HostOption {
	return func(o *hostOptions) { o.tracing = tp }
}

// NewHost returns a host for cfg that logs to log. It starts nothing; call
// Start. Session API keys are taken from cfg.Auth.Keys: merge the keys from
// core.KeysFromEnv into it first.
func NewHost(cfg config.Config, log *slog.Logger, opts ...HostOption) *Host {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var o hostOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.tracing == nil {
		o.tracing = noop.NewTracerProvider()
	}
	r := cfg.Plugins.Restart
	r.InitialBackoff = orDefault(r.InitialBackoff, defaults.Plugins.Restart.InitialBackoff)
	r.MaxBackoff = orDefault(r.MaxBackoff, defaults.Plugins.Restart.MaxBackoff)
	rpcTimeout := orDefault(cfg.Auth.RPCTimeout, defaults.Auth.RPCTimeout)
	h := &Host{
		log:              log,
		protocolVersions: acceptedVersions,
		rpcTimeout:       rpcTimeout,
		restart:          r,
		hangGrace:        rpcTimeout + hangMargin,
		queueSize:        max(0, cfg.Auth.Queue.Size),
		queueMaxWait:     orDefault(cfg.Auth.Queue.MaxWait, defaults.Auth.Queue.MaxWait),
		cfg:              cfg,
		tracer:           o.tracing.Tracer(tracerName),
	}
	h.metrics = newHostMetrics(o.metrics, h)
	return h
}

// chainNames lists, per route, the plugin names its chain runs.
func chainNames(a config.Auth) map[core.Route][]string {
	return map[core.Route][]string{
		core.RouteEvents:  a.Chains.Events,
		core.RouteREST:    a.Chains.REST,
		core.RouteRuntime: a.Chains.Runtime,
	}
}

// pluginNames returns every plugin some chain uses, in first-use order.
func pluginNames(a config.Auth) []string {
	var names []string
	for _, n := range slices.Concat(a.Chains.Events, a.Chains.REST, a.Chains.Runtime) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// specs resolves the binary, pin and config of every plugin cfg uses.
func specs(cfg config.Config) ([]spec, error) {
	var out []spec
	for _, name := range pluginNames(cfg.Auth) {
		path, err := resolvePath(cfg.Plugins, name)
		if err != nil {
			return nil, err
		}
		inst := cfg.Plugins.Instances[name]
		if inst.SHA256 != "" {
			if _, err := normalizePin(inst.SHA256); err != nil {
				return nil, fmt.Errorf("plugin %s: %w", name, err)
			}
		}
		raw := []byte("{}")
		if len(inst.Config) > 0 {
			if raw, err = json.Marshal(inst.Config); err != nil {
				return nil, fmt.Errorf("plugin %s: encode config: %w", name, err)
			}
		}
		s := spec{name: name, path: path, pin: inst.SHA256, config: raw, processes: cfg.Plugins.Processes, maxInFlight: cfg.Plugins.MaxInFlight}
		if inst.Processes > 0 {
			s.processes = inst.Processes
		}
		if inst.MaxInFlight > 0 {
			s.maxInFlight = inst.MaxInFlight
		}
		s.processes = max(1, s.processes)
		if s.maxInFlight <= 0 {
			s.maxInFlight = defaults.Plugins.MaxInFlight
		}
		out = append(out, s)
	}
	return out, nil
}

// keyDigests turns session API keys, plaintext or "sha256:<hex>", into
// digests so that plugins never see a plaintext key.
func keyDigests(keys []string) ([]string, error) {
	if _, err := core.NewKeySet(keys); err != nil {
		return nil, fmt.Errorf("auth.keys: %w", err)
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if rest, ok := strings.CutPrefix(k, "sha256:"); ok {
			out = append(out, "sha256:"+strings.ToLower(rest))
			continue
		}
		d := sha256.Sum256([]byte(k))
		out = append(out, "sha256:"+hex.EncodeToString(d[:]))
	}
	return out, nil
}

// digests returns the session API keys and the runtime keys as digests.
func (h *Host) digests() (keys, runtime []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.keys, h.runtime
}

// allDigests converts auth.keys and auth.runtime_keys.
func allDigests(a config.Auth) (keys, runtime []string, err error) {
	if keys, err = keyDigests(a.Keys); err != nil {
		return nil, nil, err
	}
	if runtime, err = keyDigests(a.RuntimeKeys); err != nil {
		return nil, nil, fmt.Errorf("auth.runtime_keys: %w", errors.Unwrap(err))
	}
	return keys, runtime, nil
}

// Start validates the config, then launches every plugin a chain uses,
// verifying each pin, handshaking and sending Info and Configure, and
// compiles the chains. A bad config, binary or plugin config fails here
// with an error naming the plugin, and nothing is left running.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	if h.instances != nil || h.closed {
		h.mu.Unlock()
		return errors.New("plugin host: Start called twice or after Close")
	}
	h.instances = map[string]*instance{}
	h.mu.Unlock()

	keys, runtime, err := allDigests(h.cfg.Auth)
	if err != nil {
		return err
	}
	cache, err := newDecisionCache(h.cfg.Auth.Cache)
	if err != nil {
		return fmt.Errorf("decision cache: %w", err)
	}
	ss, err := specs(h.cfg)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.keys, h.runtime, h.cache = keys, runtime, cache
	h.mu.Unlock()

	insts := make([]*instance, len(ss))
	errs := make([]error, len(ss))
	var wg sync.WaitGroup
	for k, s := range ss {
		insts[k] = newInstance(h, s)
		wg.Go(func() { errs[k] = insts[k].start(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, i := range insts {
			i.stop()
		}
		return err
	}

	chains := map[core.Route]*core.Chain{}
	byName := map[string]*instance{}
	for _, i := range insts {
		byName[i.name] = i
	}
	for route, names := range chainNames(h.cfg.Auth) {
		if len(names) == 0 {
			continue
		}
		auths := make([]core.Authenticator, len(names))
		for k, n := range names {
			auths[k] = byName[n]
		}
		c, err := core.NewChain(route, auths...)
		if err != nil {
			for _, i := range insts {
				i.stop()
			}
			return err
		}
		chains[route] = c
	}

	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h.mu.Lock()
	h.instances, h.chains, h.cancel = byName, chains, cancel
	for _, i := range insts {
		h.order = append(h.order, i.name)
		// Before its supervisor runs: once it does, it may take a
		// process that died meanwhile out of service (its conn nil).
		for _, p := range i.procs {
			c := p.conn.Load()
			p.log.Info("auth plugin ready", "version", i.info.Version, "pid", c.pid, "protocol", c.protocol)
		}
		i.supervise(sctx, &h.wg)
	}
	h.mu.Unlock()
	return nil
}

// Chain returns the compiled chain for route.
func (h *Host) Chain(route core.Route) (*core.Chain, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.chains[route]
	if !ok {
		return nil, fmt.Errorf("no auth chain configured for route %q", route)
	}
	return c, nil
}

// Authenticator returns the plugin instance called name, as the chains use it.
func (h *Host) Authenticator(name string) (core.Authenticator, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, ok := h.instances[name]
	if !ok {
		return nil, fmt.Errorf("no plugin %q is loaded", name)
	}
	return i, nil
}

// instancesInOrder returns the running instances in the order they loaded.
func (h *Host) instancesInOrder() []*instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	insts := make([]*instance, 0, len(h.order))
	for _, n := range h.order {
		insts = append(insts, h.instances[n])
	}
	return insts
}

// Health reports every plugin's state, in the order the plugins were loaded.
func (h *Host) Health() []Health {
	insts := h.instancesInOrder()
	out := make([]Health, len(insts))
	for k, i := range insts {
		out[k] = i.health()
	}
	return out
}

// Ready returns nil when every plugin is serving (at least one of its
// processes is), and otherwise an error naming each plugin that is not and
// the state of its processes. The server's /ready reports it.
func (h *Host) Ready() error {
	h.mu.Lock()
	started, closed := h.instances != nil && h.cancel != nil, h.closed
	h.mu.Unlock()
	switch {
	case closed:
		return errors.New("plugin host is closed")
	case !started:
		return errors.New("plugin host is not started")
	}
	var errs []error
	for _, hl := range h.Health() {
		if hl.State != StateReady {
			errs = append(errs, fmt.Errorf("plugin %s is %s: %s", hl.Name, hl.State, processSummary(hl)))
		}
	}
	return errors.Join(errs...)
}

// Status summarizes what Ready found when it passed: "ok" with every
// process serving, else the plugins running on fewer processes than
// configured, e.g. "ok; query: 1 of 2 processes serving (process 0
// restarting)". The server's /ready shows it.
func (h *Host) Status() string {
	var degraded []string
	for _, hl := range h.Health() {
		if hl.Up() < len(hl.Processes) {
			degraded = append(degraded, hl.Name+": "+processSummary(hl))
		}
	}
	if len(degraded) == 0 {
		return "ok"
	}
	return "ok; " + strings.Join(degraded, "; ")
}

// processSummary says how many of a plugin's processes serve and what the
// others are doing.
func processSummary(hl Health) string {
	var others []string
	for _, p := range hl.Processes {
		if p.State != StateReady {
			others = append(others, fmt.Sprintf("process %d %s", p.Index, p.State))
		}
	}
	s := fmt.Sprintf("%d of %d processes serving", hl.Up(), len(hl.Processes))
	if len(others) > 0 {
		s += " (" + strings.Join(others, ", ") + ")"
	}
	return s
}

// Purge empties the decision cache, so that the next request for every
// credential reaches its plugin.
func (h *Host) Purge() {
	h.mu.Lock()
	c := h.cache
	h.mu.Unlock()
	c.purge()
}

// Reload applies a new config to the running plugins: session API keys and
// each plugin's config are sent again with Configure, and the cache is
// emptied so a rotated-out key is refused at once. Changing which plugins
// run, their chains, binaries or pins needs a restart and is refused; cache
// settings and auth.rpc_timeout also take effect only on restart.
func (h *Host) Reload(ctx context.Context, cfg config.Config) error {
	ss, err := specs(cfg)
	if err != nil {
		return err
	}
	keys, runtime, err := allDigests(cfg.Auth)
	if err != nil {
		return err
	}
	h.mu.Lock()
	if h.cancel == nil || h.closed {
		h.mu.Unlock()
		return errors.New("plugin host is not running")
	}
	old := h.cfg
	if !slices.Equal(old.Auth.Chains.Events, cfg.Auth.Chains.Events) || !slices.Equal(old.Auth.Chains.REST, cfg.Auth.Chains.REST) ||
		!slices.Equal(old.Auth.Chains.Runtime, cfg.Auth.Chains.Runtime) {
		h.mu.Unlock()
		return errors.New("reload: auth.chains changed; restart the server to apply it")
	}
	insts := make([]*instance, len(ss))
	for k, s := range ss {
		i := h.instances[s.name]
		i.mu.Lock()
		same := i.spec.path == s.path && i.spec.pin == s.pin
		sameSize := i.spec.processes == s.processes && i.spec.maxInFlight == s.maxInFlight
		i.mu.Unlock()
		if !same {
			h.mu.Unlock()
			return fmt.Errorf("reload: plugin %s: path or sha256 changed; restart the server to apply it", s.name)
		}
		if !sameSize {
			h.mu.Unlock()
			return fmt.Errorf("reload: plugin %s: processes or max_in_flight changed; restart the server to apply it", s.name)
		}
		insts[k] = i
	}
	oldSpecs := make([]spec, len(insts))
	for k, i := range insts {
		i.mu.Lock()
		oldSpecs[k] = i.spec
		i.mu.Unlock()
	}
	oldKeys, oldRuntime := h.keys, h.runtime
	h.keys, h.runtime, h.cfg = keys, runtime, cfg
	h.mu.Unlock()

	// The cache is emptied before the processes are reconfigured, so that
	// no decision of the running config answers from it meanwhile, and
	// again after, for what was decided while they changed over; a call
	// asked before a purge is not cached after it (decisionCache.epoch).
	h.Purge()
	defer h.Purge()
	var errs []error
	took := make([][]*process, len(insts))
	gens := make([]uint64, len(insts))
	for k, i := range insts {
		var err error
		took[k], gens[k], err = i.reconfigure(ctx, ss[k], i.procs, false)
		errs = append(errs, err)
	}
	err = errors.Join(errs...)
	if err == nil {
		return nil
	}
	// A process refused, or did not answer: roll every instance back, so
	// that no process serves the new config (or the keys it revoked) while
	// another serves the old, and the reload is rejected as a whole. A
	// process that took the new config and will not take the old one back
	// is restarted with the old.
	h.mu.Lock()
	h.keys, h.runtime, h.cfg = oldKeys, oldRuntime, old
	h.mu.Unlock()
	// The running config goes back to the processes that took the new one,
	// and to those that started during the reload and came up with it.
	for k, i := range insts {
		back := took[k]
		for _, p := range i.startedWith(gens[k]) {
			if !slices.Contains(back, p) {
				back = append(back, p)
			}
		}
		if _, _, rerr := i.reconfigure(ctx, oldSpecs[k], back, true); rerr != nil {
			h.log.Error("reload: a plugin process refused its running config back; restarting it", "plugin", i.name, "error", rerr)
		}
	}
	return fmt.Errorf("reload rejected; the plugins keep the running config: %w", err)
}

// Close stops supervision and kills every plugin process. It is safe to call
// more than once.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	cancel := h.cancel
	insts := make([]*instance, 0, len(h.instances))
	for _, i := range h.instances {
		insts = append(insts, i)
	}
	h.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	h.wg.Wait()
	var wg sync.WaitGroup
	for _, i := range insts {
		wg.Go(i.stop)
	}
	wg.Wait()
	h.Purge()
	return nil
}
