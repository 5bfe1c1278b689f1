package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
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
	// hangMargin is how long past the latest moment a healthy process
	// answers a protocol 3 or 4 call it may stay unanswered before its process
	// counts as hung and is restarted. The SDK gives the calls of a batch
	// one timer, at the latest of their deadlines, so a healthy process may
	// answer a call up to auth.rpc_timeout past its own deadline (no call
	// has more than that left when it is sent): the hang grace is
	// rpc_timeout plus hangMargin.
	hangMargin = 5 * time.Second
)

// State is the lifecycle state of a plugin process, and of a plugin: the
// best state among its processes.
type State string

// The states a plugin process moves through.
const (
	StateStarting   State = "starting"   // launched, not yet configured
	StateReady      State = "ready"      // serving requests
	StateRestarting State = "restarting" // crashed; its calls fail closed (or go to another process) until it is back
	StateFailed     State = "failed"     // gave up after plugins.restart.max_attempts
	StateStopped    State = "stopped"    // closed by the host
)

// rank orders states from best to worst: a plugin is in the best state of
// its processes.
func (s State) rank() int {
	return slices.Index([]State{StateReady, StateStarting, StateRestarting, StateFailed, StateStopped}, s)
}

// Health is one plugin's state, for readiness checks and operators. The
// plugin is ready while at least one of its processes is.
type Health struct {
	Name      string
	State     State
	Version   string // the version the plugin declared at boot
	PID       int    // the first serving process's; 0 when none serves
	Restarts  int    // successful restarts since boot, every process's
	LastError string // the latest start or crash error; never holds a secret
	Processes []ProcessHealth
}

// Up returns how many of the plugin's processes are serving.
func (h Health) Up() int {
	n := 0
	for _, p := range h.Processes {
		if p.State == StateReady {
			n++
		}
	}
	return n
}

// ProcessHealth is the state of one process of a plugin.
type ProcessHealth struct {
	Index     int // 0 to plugins.processes-1; a restart keeps it
	State     State
	PID       int // 0 when not running
	Restarts  int
	InFlight  int    // calls it has not answered yet
	LastError string // never holds a secret
}

// spec is everything needed to (re)start one plugin.
type spec struct {
	name        string
	path        string
	pin         string // "" when not pinned
	config      []byte // JSON object
	processes   int    // how many run
	maxInFlight int    // calls in flight per process
}

// conn is one running plugin process. A restart replaces it whole.
type conn struct {
	client   *goplugin.Client
	rpc      *grpcClient   // Info and Configure; Authenticate below protocol 3
	stream   *streamClient // every Authenticate from protocol 3 (4: on the channel); nil below
	proc     *os.Process   // for a hard kill; nil if go-plugin did not start one
	pid      int
	started  time.Time
	protocol int    // the negotiated plugin protocol version
	gen      uint64 // the instance's config generation it was configured with
	// stale is set when the process did not accept a reloaded config: it
	// may still hold the old one (old key digests), so it takes no call
	// and its supervisor restarts it with the new one.
	stale atomic.Bool
}

// authenticate sends one call, to be answered by deadline (or ctx's, if
// earlier), over the stream, as flat (req's declared inputs in the flat
// form, size bytes encoded), or as a unary call of req and in to a plugin
// older than protocol 3. release is called once the process is done with
// the call.
func (c *conn) authenticate(ctx context.Context, deadline time.Time, req *core.Request, flat *authpb.Request, size int, in Inputs, release func()) core.Result {
	if c.stream != nil {
		return c.stream.authenticate(ctx, deadline, flat, size, release)
	}
	defer release()
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return c.rpc.authenticate(ctx, req, in)
}

// alive reports whether the connection can take calls: false once its
// stream has failed or it refused a reloaded config, even before the
// supervisor notices.
func (c *conn) alive() bool { return !c.stale.Load() && (c.stream == nil || c.stream.alive()) }

// behind reports whether the process has left a call unanswered past its
// deadline (protocol 3): it gets new calls only when no other process can.
func (c *conn) behind() bool { return c.stream != nil && c.stream.behind() }

// kill ends the process: at once with SIGKILL when hard (it broke the
// protocol or hung, so it may not cooperate), and then through go-plugin,
// which reaps it.
func (c *conn) kill(hard bool, why error) {
	if c.stream != nil {
		c.stream.close(why)
	}
	if hard && c.proc != nil {
		_ = c.proc.Kill() // ErrProcessDone once it has been reaped: never another process
	}
	c.client.Kill()
}

// process is one of a plugin's processes, with its own supervisor.
type process struct {
	inst    *instance
	index   int
	log     *slog.Logger
	conn    atomic.Pointer[conn] // nil while the process is down
	kick    chan struct{}        // wakes the supervisor after a failed call
	release func()               // gives a call slot back (instance.release), made once

	inFlight int // calls not yet answered; guarded by inst.mu

	mu        sync.Mutex // guards the fields below
	state     State
	restarts  int
	lastErr   string
	lastErrAt time.Time
	failures  int // consecutive crashes and failed starts
}

func (p *process) setState(s State, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = s
	if err != nil {
		p.lastErr, p.lastErrAt = err.Error(), time.Now()
	}
}

// health reports the process; inFlight is read by the caller under inst.mu.
func (p *process) health(inFlight int) ProcessHealth {
	h := ProcessHealth{Index: p.index, InFlight: inFlight}
	if c := p.conn.Load(); c != nil {
		h.PID = c.pid
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h.State, h.Restarts, h.LastError = p.state, p.restarts, p.lastErr
	return h
}

// wake asks the supervisor to check the process now.
func (p *process) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// launch verifies the pin, starts the process, handshakes and, when
// configure is set, sends Configure and opens the protocol 4 channel (or
// the protocol 3 stream). It cleans up after itself on failure.
func (p *process) launch(ctx context.Context, configure bool) (*conn, Info, error) {
	i := p.inst
	i.mu.Lock()
	s, gen := i.spec, i.gen
	i.mu.Unlock()

	if _, err := verifyPin(s.path, s.pin); err != nil {
		return nil, Info{}, fmt.Errorf("plugin %s: refusing to start: %w", s.name, err)
	}
	h := i.host
	cmd := exec.Command(s.path)
	bindToParent(cmd)
	// The channel (protocol 4): the process inherits its end, and the
	// host keeps the other until the process has negotiated. Both are
	// closed here on every return but the channel's opening.
	var hostEnd, pluginEnd *os.File
	if channelSupported {
		var err error
		if hostEnd, pluginEnd, err = newChannel(); err != nil {
			return nil, Info{}, fmt.Errorf("plugin %s: %w", s.name, err)
		}
		defer func() {
			if hostEnd != nil {
				hostEnd.Close()
			}
			if pluginEnd != nil {
				pluginEnd.Close()
			}
		}()
		cmd.ExtraFiles = []*os.File{pluginEnd}
		cmd.Env = []string{channelEnv + "=" + strconv.Itoa(channelFD)}
	}
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
		Logger:           newSlogHCLogger(p.log, hclog.Debug),
		SyncStdout:       &lineLogger{log: p.log, level: slog.LevelInfo, msg: "plugin stdout"},
		SyncStderr:       &lineLogger{log: p.log, level: slog.LevelWarn, msg: "plugin stderr"},
	})
	fail := func(err error) (*conn, Info, error) {
		client.Kill()
		return nil, Info{}, fmt.Errorf("plugin %s: %w", s.name, err)
	}
	proto, err := client.Client()
	if pluginEnd != nil {
		pluginEnd.Close() // the process has its copy, or failed to start
		pluginEnd = nil
	}
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
	c := &conn{client: client, rpc: rpc, started: time.Now(), protocol: client.NegotiatedVersion(), gen: gen}
	if cmd.Process != nil {
		c.proc, c.pid = cmd.Process, cmd.Process.Pid
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
		switch {
		case c.protocol >= channelVersion:
			c.stream, err = openChannel(hostEnd, p.wake)
			hostEnd = nil // openChannel closed it
		case c.protocol >= streamVersion:
			c.stream, err = openStream(rpc.rpc, p.wake)
		}
		if err != nil {
			return fail(err)
		}
	}
	if first := i.declared(); first != nil && !sameDeclaration(*first, info) {
		if c.stream != nil {
			c.stream.close(errors.New("the process is refused"))
		}
		return fail(errors.New("this process declares different inputs than the plugin's first process at boot; restart the server"))
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

// supervise watches the process until ctx ends. When it has exited, or its
// stream failed or hung, its calls in flight fail closed (the plugin's
// other processes take the next ones), the cache is emptied and the
// process is restarted with a fresh client, backing off exponentially up
// to plugins.restart limits.
func (p *process) supervise(ctx context.Context) {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
		c := p.conn.Load()
		if c == nil {
			continue
		}
		why, hard := p.broken(c)
		if why == nil {
			continue
		}
		p.conn.Store(nil)
		p.setState(StateRestarting, why)
		p.inst.processDown()
		up := time.Since(c.started)
		p.log.Warn("plugin process ended; its calls in flight failed closed, it is restarted", "pid", c.pid, "uptime", up.Round(time.Millisecond), "reason", why)
		c.kill(hard, why)
		p.inst.host.cache.purge()
		p.mu.Lock()
		if up >= stableUptime {
			p.failures = 0
		}
		p.mu.Unlock()
		if !p.restart(ctx) {
			return
		}
	}
}

// broken reports why c can no longer serve (nil while it can), and whether
// the process must be killed hard because it may not cooperate.
func (p *process) broken(c *conn) (why error, hard bool) {
	name := p.inst.name
	switch {
	case c.client.Exited():
		return fmt.Errorf("plugin %s process %d exited after %s", name, p.index, time.Since(c.started).Round(time.Millisecond)), false
	case c.stale.Load():
		return fmt.Errorf("plugin %s process %d did not accept the reloaded config", name, p.index), false
	case !c.alive():
		return fmt.Errorf("plugin %s process %d: its stream failed", name, p.index), true
	case c.stream != nil:
		if late := c.stream.overdue(time.Now()); late > p.inst.host.hangGrace {
			err := fmt.Errorf("plugin %s process %d hung: a call is unanswered %s past its deadline", name, p.index, late.Round(time.Millisecond))
			return err, true
		}
	}
	return nil, false
}

// restart relaunches the process with exponential backoff. It reports false
// when it gave up or ctx ended.
func (p *process) restart(ctx context.Context) bool {
	r := p.inst.host.restart
	for {
		p.mu.Lock()
		p.failures++
		n := p.failures
		p.mu.Unlock()
		if r.MaxAttempts <= 0 || n > r.MaxAttempts {
			err := fmt.Errorf("plugin %s process %d: gave up after %d restart attempts", p.inst.name, p.index, n-1)
			p.setState(StateFailed, err)
			p.log.Error("plugin restart budget exhausted; this process stays down, the plugin's other processes serve (if any)", "attempts", n-1)
			p.inst.processDown()
			return false
		}
		wait := backoff(r.InitialBackoff, r.MaxBackoff, n)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		c, _, err := p.launch(ctx, true)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			p.setState(StateRestarting, err)
			p.log.Error("plugin restart failed", "attempt", n, "error", err)
			continue
		}
		if !p.install(c) {
			c.kill(false, errConfigReplaced)
			p.log.Info("plugin process started with a config a reload has replaced since; starting it again", "pid", c.pid)
			p.mu.Lock()
			p.failures-- // not the process's fault
			p.mu.Unlock()
			continue
		}
		p.mu.Lock()
		p.state, p.restarts = StateReady, p.restarts+1
		p.mu.Unlock()
		p.inst.processUp()
		p.log.Info("plugin restarted", "pid", c.pid, "attempt", n)
		return true
	}
}

// errConfigReplaced fails the calls of a process that came up with a
// config a reload had replaced meanwhile; it never took one.
var errConfigReplaced = errors.New("the plugin's config was reloaded while the process started")

// install puts c in service, unless a reload replaced the config it was
// configured with while it started: it would serve the old one (old key
// digests) with nothing left to reconfigure it. Under inst.mu, so that a
// reload either sees c to reconfigure it or has bumped the generation
// before this check.
func (p *process) install(c *conn) bool {
	i := p.inst
	i.mu.Lock()
	defer i.mu.Unlock()
	if c.gen != i.gen {
		return false
	}
	p.conn.Store(c)
	return true
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

// stop kills the process; the supervisor has already been stopped.
func (p *process) stop() {
	if c := p.conn.Swap(nil); c != nil {
		c.kill(false, errors.New("the plugin host is closing"))
	}
	p.setState(StateStopped, nil)
}
