package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/agent-server/agent-server/core"
)

// Timings of the plugin lifecycle.
const (
	// startTimeout bounds launch plus handshake.
	startTimeout = 10 * time.Second
	// setupTimeout is the deadline of the Info and Configure RPCs.
	setupTimeout = 5 * time.Second
	// pollEvery is how often a supervisor checks that its process lives.
	pollEvery = 100 * time.Millisecond
	// stableUptime is how long a plugin must run before a crash no longer
	// counts against the restart budget.
	stableUptime = time.Minute
)

// State is the lifecycle state of one plugin process.
type State string

// The states a plugin moves through.
const (
	StateStarting   State = "starting"   // launched, not yet configured
	StateReady      State = "ready"      // serving requests
	StateRestarting State = "restarting" // crashed; requests fail closed until it is back
	StateFailed     State = "failed"     // gave up after plugins.restart.max_attempts
	StateStopped    State = "stopped"    // closed by the host
)

// Health is one plugin's state, for readiness checks and operators.
type Health struct {
	Name      string
	State     State
	Version   string // the version the plugin declared at boot
	PID       int    // 0 when not running
	Restarts  int    // successful restarts since boot
	LastError string // the latest start or crash error; never holds a secret
}

// spec is everything needed to (re)start one plugin.
type spec struct {
	name   string
	path   string
	pin    string // "" when not pinned
	config []byte // JSON object
}

// conn is one running plugin process. A restart replaces it whole.
type conn struct {
	client   *goplugin.Client
	rpc      *grpcClient
	pid      int
	started  time.Time
	protocol int // the negotiated plugin protocol version
}

// instance is one configured plugin: the core.Authenticator the chains hold,
// and the supervisor of its process.
type instance struct {
	name string
	host *Host
	log  *slog.Logger
	info Info // from the first start; a restart must declare the same

	conn    atomic.Pointer[conn] // nil while the process is down
	kick    chan struct{}        // wakes the supervisor after a failed RPC
	metrics *instanceMetrics     // nil measures nothing

	mu       sync.Mutex // guards the fields below
	spec     spec
	state    State
	restarts int
	lastErr  string
	failures int // consecutive crashes and failed starts
}

func newInstance(h *Host, s spec) *instance {
	return &instance{
		name:  s.name,
		host:  h,
		log:   h.log.With("plugin", s.name),
		kick:  make(chan struct{}, 1),
		spec:  s,
		state: StateStarting,

		metrics: h.metrics.instance(s.name),
	}
}

// Name returns the instance name that chains refer to.
func (i *instance) Name() string { return i.name }

// Reads returns the query parameters and headers the plugin declared: the
// only ones it is ever sent.
func (i *instance) Reads() (query, headers []string) {
	return i.info.Inputs.QueryParams, i.info.Inputs.Headers
}

// Authenticate skips the plugin when none of its inputs is present, answers
// from the decision cache when it can, and otherwise asks the plugin with
// the auth.rpc_timeout deadline. Any failure is Error, never Allow. Each
// call that is not skipped is a span (spanPluginCall), whose context the
// RPC carries to the plugin process.
func (i *instance) Authenticate(ctx context.Context, req *core.Request) core.Result {
	in := i.info.Inputs
	if !in.empty() && !in.present(req) {
		return core.Abstained()
	}
	ctx, span := i.host.tracer.Start(ctx, spanPluginCall, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String(attrPlugin, i.name), attribute.String(attrRoute, string(req.Route))))
	res := i.authenticate(ctx, req, in)
	endPluginSpan(span, res)
	return res
}

// authenticate is Authenticate past the input check.
func (i *instance) authenticate(ctx context.Context, req *core.Request, in Inputs) core.Result {
	c := i.conn.Load()
	if c == nil {
		i.metrics.failed()
		return core.Failed(fmt.Errorf("plugin %s is %s", i.name, i.currentState()))
	}
	cache := i.host.cache
	var key cacheKey
	if cache != nil {
		key = cache.key(i.name, req, in)
		res, ok := cache.get(key)
		i.metrics.cache(ok)
		if ok {
			return res
		}
	}
	i.host.rpcs.Add(1)
	rctx, cancel := context.WithTimeout(ctx, i.host.rpcTimeout)
	start := time.Now()
	res := c.rpc.authenticate(rctx, req, in)
	i.metrics.rpc(start, res.Decision == core.Error)
	cancel()
	switch res.Decision {
	case core.Error:
		i.wake()
		return res
	case core.Allow:
		res.Principal.Authenticator = i.name
		if res.Principal.Expired(time.Now()) {
			res = core.Denied(core.ReasonExpired)
		}
	}
	cache.put(key, res)
	return res
}

// wake asks the supervisor to check the process now.
func (i *instance) wake() {
	select {
	case i.kick <- struct{}{}:
	default:
	}
}

func (i *instance) currentState() State {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.state
}

func (i *instance) setState(s State, err error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.state = s
	if err != nil {
		i.lastErr = err.Error()
	}
}

func (i *instance) health() Health {
	h := Health{Name: i.name}
	if c := i.conn.Load(); c != nil {
		h.PID = c.pid
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	h.State, h.Restarts, h.LastError, h.Version = i.state, i.restarts, i.lastErr, i.info.Version
	return h
}

// start launches the process for the first time and records its Info.
func (i *instance) start(ctx context.Context) error {
	c, info, err := i.launch(ctx, true)
	if err != nil {
		i.setState(StateFailed, err)
		return err
	}
	i.info = info
	i.conn.Store(c)
	i.setState(StateReady, nil)
	return nil
}

// launch verifies the pin, starts the process, handshakes and, when
// configure is set, sends Configure. It cleans up after itself on failure.
func (i *instance) launch(ctx context.Context, configure bool) (*conn, Info, error) {
	i.mu.Lock()
	s := i.spec
	i.mu.Unlock()

	if _, err := verifyPin(s.path, s.pin); err != nil {
		return nil, Info{}, fmt.Errorf("plugin %s: refusing to start: %w", s.name, err)
	}
	h := i.host
	cmd := exec.Command(s.path)
	bindToParent(cmd)
	versioned := make(map[int]goplugin.PluginSet, len(h.protocolVersions))
	for _, v := range h.protocolVersions {
		versioned[int(v)] = goplugin.PluginSet{pluginKey: &grpcPlugin{}}
	}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  handshake(0), // the version comes from VersionedPlugins
		VersionedPlugins: versioned,
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		SkipHostEnv:      true,
		GRPCDialOptions:  []grpc.DialOption{grpc.WithChainUnaryInterceptor(injectTraceContext)},
		StartTimeout:     startTimeout,
		Logger:           newSlogHCLogger(i.log, hclog.Debug),
		SyncStdout:       &lineLogger{log: i.log, level: slog.LevelInfo, msg: "plugin stdout"},
		SyncStderr:       &lineLogger{log: i.log, level: slog.LevelWarn, msg: "plugin stderr"},
	})
	fail := func(err error) (*conn, Info, error) {
		client.Kill()
		return nil, Info{}, fmt.Errorf("plugin %s: %w", s.name, err)
	}
	proto, err := client.Client()
	if err != nil {
		return fail(handshakeError(s.path, h.protocolVersions, err))
	}
	raw, err := proto.Dispense(pluginKey)
	if err != nil {
		return fail(fmt.Errorf("dispense: %w", err))
	}
	rpc, ok := raw.(*grpcClient)
	if !ok {
		return fail(fmt.Errorf("dispense: unexpected client type %T", raw))
	}
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	info, err := rpc.info(sctx)
	if err != nil {
		return fail(err)
	}
	if configure {
		req := ConfigureRequest{Config: s.config}
		if info.WantsKeys {
			req.KeyDigests, req.RuntimeKeyDigests = h.digests()
		}
		in, err := rpc.configure(sctx, req)
		if err != nil {
			return fail(fmt.Errorf("bad plugin config: %w", err))
		}
		if in != nil {
			info.Inputs = *in
		}
	}
	if i.info.Name != "" && !sameDeclaration(i.info, info) {
		return fail(errors.New("the restarted binary declares different inputs than at boot; restart the server"))
	}
	c := &conn{client: client, rpc: rpc, started: time.Now(), protocol: client.NegotiatedVersion()}
	if cmd.Process != nil {
		c.pid = cmd.Process.Pid
	}
	return c, info, nil
}

// handshakeError explains the two handshake failures operators meet.
func handshakeError(path string, hostVersions []uint, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Unrecognized remote plugin message"):
		first, _, _ := strings.Cut(msg, "\n")
		return fmt.Errorf("start %s: handshake failed: the plugin wrote something other than the go-plugin handshake to stdout (a plugin must not print to stdout before plugins.Serve): %s", path, first)
	case strings.Contains(msg, "incompatible API version"):
		return fmt.Errorf("start %s: handshake failed: host speaks auth plugin protocol versions %s; rebuild the plugin against this agent-server's plugins SDK: %w", path, versionList(hostVersions), err)
	}
	return fmt.Errorf("start %s: %w", path, err)
}

// versionList formats versions as "1, 2".
func versionList(vs []uint) string {
	s := make([]string, len(vs))
	for k, v := range vs {
		s[k] = fmt.Sprint(v)
	}
	return strings.Join(s, ", ")
}

func sameDeclaration(a, b Info) bool {
	return a.WantsKeys == b.WantsKeys && sameInputs(a.Inputs, b.Inputs)
}

func sameInputs(a, b Inputs) bool {
	return slices.Equal(a.QueryParams, b.QueryParams) &&
		slices.Equal(a.Headers, b.Headers) &&
		a.Subprotocol == b.Subprotocol &&
		a.FirstMessage == b.FirstMessage &&
		a.ClientCertificate == b.ClientCertificate
}

// supervise watches the process until ctx ends. When it has exited, requests
// fail closed at once, the cache is emptied and the plugin is restarted with
// a fresh client, backing off exponentially up to plugins.restart limits.
func (i *instance) supervise(ctx context.Context) {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-i.kick:
		}
		c := i.conn.Load()
		if c == nil || !c.client.Exited() {
			continue
		}
		i.conn.Store(nil)
		c.client.Kill()
		i.host.cache.purge()
		up := time.Since(c.started)
		i.mu.Lock()
		if up >= stableUptime {
			i.failures = 0
		}
		i.mu.Unlock()
		crash := fmt.Errorf("plugin %s exited after %s", i.name, up.Round(time.Millisecond))
		i.setState(StateRestarting, crash)
		i.log.Warn("plugin exited; requests fail closed until it is restarted", "pid", c.pid, "uptime", up.Round(time.Millisecond))
		if !i.restart(ctx) {
			return
		}
	}
}

// restart relaunches the plugin with exponential backoff. It reports false
// when it gave up or ctx ended.
func (i *instance) restart(ctx context.Context) bool {
	r := i.host.restart
	for {
		i.mu.Lock()
		i.failures++
		n := i.failures
		i.mu.Unlock()
		if r.MaxAttempts <= 0 || n > r.MaxAttempts {
			err := fmt.Errorf("plugin %s: gave up after %d restart attempts", i.name, n-1)
			i.setState(StateFailed, err)
			i.log.Error("plugin restart budget exhausted; requests fail closed", "attempts", n-1)
			return false
		}
		wait := backoff(r.InitialBackoff, r.MaxBackoff, n)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		c, _, err := i.launch(ctx, true)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			i.setState(StateRestarting, err)
			i.log.Error("plugin restart failed", "attempt", n, "error", err)
			continue
		}
		i.conn.Store(c)
		i.mu.Lock()
		i.state, i.restarts = StateReady, i.restarts+1
		i.mu.Unlock()
		i.log.Info("plugin restarted", "pid", c.pid, "attempt", n)
		return true
	}
}

// backoff returns the wait before attempt n (1-based): initial, doubling, at
// most max.
func backoff(initial, max time.Duration, n int) time.Duration {
	d := initial
	for k := 1; k < n && d < max; k++ {
		d *= 2
	}
	return min(d, max)
}

// reconfigure sends a new config to the running process.
func (i *instance) reconfigure(ctx context.Context, s spec) error {
	i.mu.Lock()
	i.spec = s
	i.mu.Unlock()
	c := i.conn.Load()
	if c == nil {
		return nil // the next restart picks the new spec up
	}
	req := ConfigureRequest{Config: s.config}
	if i.info.WantsKeys {
		req.KeyDigests, req.RuntimeKeyDigests = i.host.digests()
	}
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	in, err := c.rpc.configure(sctx, req)
	if err != nil {
		return fmt.Errorf("plugin %s: bad plugin config: %w", i.name, err)
	}
	if in != nil && !sameInputs(*in, i.info.Inputs) {
		return fmt.Errorf("plugin %s: the new config changes the inputs it reads; restart the server to apply it", i.name)
	}
	return nil
}

// stop kills the process; the supervisor has already been stopped.
func (i *instance) stop() {
	if c := i.conn.Swap(nil); c != nil {
		c.client.Kill()
	}
	i.setState(StateStopped, nil)
}

var (
	_ core.Authenticator = (*instance)(nil)
	_ core.Reader        = (*instance)(nil)
)
