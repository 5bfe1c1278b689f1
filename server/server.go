package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// Options configures a Server.
type Options struct {
	Config    config.Config
	Actors    *actors.System
	Store     core.Store
	Ready     []ReadyCheck // what /ready waits for; none: always ready
	Logger    *slog.Logger
	AccessLog *slog.Logger // where access lines go; nil uses Logger
	Version   string

	// Metrics registers the edge's collectors (metrics.go); nil measures
	// nothing. Gatherer is the registry the operations view reads the
	// server's own figures from; nil shows what needs no metrics.
	Metrics  prometheus.Registerer
	Gatherer prometheus.Gatherer
	// Tracing traces each WebSocket handshake and REST request; nil
	// traces nothing. The propagator is the global one.
	Tracing trace.TracerProvider
	// Plugins reports the auth plugins' health for the operations view;
	// nil when authentication is disabled.
	Plugins func() []PluginStatus
	// Nodes reports the cluster's members for the operations view; nil
	// outside cluster mode.
	Nodes func() []NodeStatus
}

// Defaults for limits left at zero.
const (
	defaultMaxFrameBytes  = 64 << 10
	defaultSendQueueBytes = 1 << 20
	defaultWriteTimeout   = 10 * time.Second
	readHeaderTimeout     = 10 * time.Second
	idleConnTimeout       = 2 * time.Minute // an idle keep-alive HTTP connection
)

// Server is the HTTP and WebSocket edge. It serves the health routes, the
// events WebSocket and, mounted from newREST, the REST API.
type Server struct {
	cfg     config.Config
	actors  *actors.System
	store   core.Store
	ready   []ReadyCheck
	log     *slog.Logger
	access  *slog.Logger // nil when server.access_log is off
	version string

	started    time.Time
	lastActive atomic.Int64 // unix nanoseconds of the last request or frame
	closing    atomic.Bool

	handler  http.Handler
	upgrader *gws.Upgrader
	// protoUpgrader echoes core.Subprotocol; used when the client offers it.
	protoUpgrader *gws.Upgrader
	sockets       *socketSet
	abuse         *addrLimits // per-address auth failure and pending-socket limits
	proxies       trusted     // server.trusted_proxies
	// runtimeUpgrader reads the larger frames of agent runtimes (runtime.go).
	runtimeUpgrader *gws.Upgrader
	tls             *tlsEdge // nil: plain HTTP (server.tls unset)

	metrics *serverMetrics // nil measures nothing
	tracer  trace.Tracer   // nil traces nothing
	tracing trace.TracerProvider
	ops     *operations // the operations view's figures (operations.go)

	mu      sync.Mutex
	servers []*http.Server
	direct  []*directListener // the plain listeners' direct upgrades (direct.go)
	// stopped is closed when the one shutdown has ended, with stopErr its
	// error; nil until Shutdown is first called (under mu).
	stopped chan struct{}
	stopErr error

	// perFrameWrites makes every socket write one frame per syscall. Only
	// the comparison benchmark sets it.
	perFrameWrites bool
}

// New builds the edge. It has no side effects: nothing listens until Serve.
func New(opts Options) (*Server, error) {
	if opts.Actors == nil {
		return nil, errors.New("server: Options.Actors is required")
	}
	if opts.Store == nil {
		return nil, errors.New("server: Options.Store is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := opts.Config
	lim := &cfg.Limits
	if lim.MaxFrameBytes <= 0 {
		lim.MaxFrameBytes = defaultMaxFrameBytes
	}
	if lim.SendQueueBytes <= 0 {
		lim.SendQueueBytes = defaultSendQueueBytes
	}
	if lim.WriteTimeout <= 0 {
		lim.WriteTimeout = defaultWriteTimeout
	}
	s := &Server{
		cfg:     cfg,
		actors:  opts.Actors,
		store:   opts.Store,
		ready:   opts.Ready,
		log:     log,
		version: opts.Version,
		started: time.Now(),
		sockets: newSocketSet(),
	}
	if cfg.Server.AccessLog {
		s.access = opts.AccessLog
		if s.access == nil {
			s.access = log
		}
	}
	if cfg.Server.TLS.CertFile != "" {
		t, err := newTLSEdge(cfg.Server.TLS, log)
		if err != nil {
			return nil, err
		}
		s.tls = t
	}
	s.touch()
	s.metrics = newServerMetrics(opts.Metrics, s)
	if opts.Tracing != nil {
		s.tracing, s.tracer = opts.Tracing, opts.Tracing.Tracer(tracerName)
	}
	s.ops = newOperations(s, opts)
	s.proxies = newTrusted(cfg.Server.TrustedProxies)
	s.upgrader, s.protoUpgrader = s.newUpgraders()
	s.runtimeUpgrader = s.newUpgrader(runtimeFrameBytes(cfg.Limits))
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler, access log included.
func (s *Server) Handler() http.Handler { return s.handler }

// ErrClosed is Serve's error when Shutdown had begun before it.
var ErrClosed = errors.New("server is shut down")

// Serve serves HTTP on ln (HTTPS when server.tls is set) until ctx ends,
// then shuts down gracefully within server.shutdown_timeout, or until
// Shutdown is called. It returns nil after a graceful shutdown, and the
// shutdown's error after one that was not; the error of a shutdown that
// Shutdown began is Shutdown's to return, not Serve's.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.tls != nil {
		ln = s.tls.listen(ln)
	} else {
		ln = s.listenDirect(ln)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleConnTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = ln.Close() // the direct listener accepts from the start
		return fmt.Errorf("serve: %w", ErrClosed)
	}
	s.servers = append(s.servers, srv)
	s.mu.Unlock()

	s.ops.run(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		// Shutdown closes the direct listener itself, and net/http's Serve,
		// when that comes before net/http's own Shutdown, returns the
		// listener's error rather than ErrServerClosed.
		if errors.Is(err, http.ErrServerClosed) || (s.closing.Load() && errors.Is(err, net.ErrClosed)) {
			return nil
		}
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	timeout := s.cfg.Server.ShutdownTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	began, err := s.stop(sctx)
	<-errc
	if !began {
		return nil // a Shutdown under way returns its error
	}
	return err
}

// Shutdown stops accepting, lets the requests and handshakes in flight
// finish while the actors that answer them still run, then closes every
// WebSocket with 1001 through the actors, waits for the close frames to be
// written, and force-closes whatever is left when ctx ends.
//
// It runs once. A later or concurrent call (Serve's own, when its context
// ends after the caller's Shutdown) does not run it again: it waits for the
// first, as long as its own ctx allows, and returns the first's error, so
// that no caller sees a second, emptier shutdown succeed where the first
// failed.
//
// The time left before ctx's deadline is split (see drainBudget): the
// requests and handshakes in flight, through net/http and accepted
// directly, get at most half of it to finish, and those still in flight
// then are closed, so that the actors' shutdown (closing the sockets with
// 1001, flushing the event writer, leaving the cluster) always has the
// other half. The actors stop only after that drain: a request in flight
// that reached them as they stopped would be refused, or wait for its
// answer until the request timeout, past the shutdown's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	_, err := s.stop(ctx)
	return err
}

// stop is Shutdown; began reports whether this call ran the shutdown,
// rather than waiting for one under way.
func (s *Server) stop(ctx context.Context) (began bool, err error) {
	s.mu.Lock()
	began = s.stopped == nil
	if began {
		s.stopped = make(chan struct{})
	}
	stopped := s.stopped
	s.mu.Unlock()
	if began {
		s.stopErr = s.shutdown(ctx)
		close(stopped)
		return true, s.stopErr
	}
	select {
	case <-stopped: // first: it may have ended with ctx already done
		return false, s.stopErr
	default:
	}
	select {
	case <-stopped:
		return false, s.stopErr
	case <-ctx.Done():
		return false, fmt.Errorf("wait for the shutdown under way: %w", ctx.Err())
	}
}

// shutdown is Shutdown's one run.
func (s *Server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	servers := append([]*http.Server(nil), s.servers...)
	direct := append([]*directListener(nil), s.direct...)
	s.mu.Unlock()

	// The requests in flight through net/http and the handshakes accepted
	// directly finish (upgraded or refused; one that was to go to net/http
	// is closed, as net/http drops a request that arrives while it shuts
	// down) before the actors stop and the sockets are closed, so that
	// none is refused or missed; those still in flight when the drain's
	// share of the time is up are closed.
	dctx, cancel := drainBudget(ctx)
	var wg sync.WaitGroup
	httpErrs := make([]error, len(servers))
	for i, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(dctx); err != nil { // closes the listener first
				httpErrs[i] = fmt.Errorf("finish HTTP requests and handshakes: %w", err)
			}
		}()
	}
	var directErrs []error
	for _, d := range direct {
		_ = d.Close()
		directErrs = append(directErrs, d.drain(dctx))
	}
	wg.Wait()
	cancel()
	for _, srv := range servers {
		_ = srv.Close() // the requests the drain's share did not see finish
	}
	actorErr := s.actors.Shutdown(ctx)
	// Sockets the actors never knew (mid-handshake, reject_with: close).
	for _, sock := range s.sockets.close() {
		sock.Close(core.DisconnectShutdown)
	}
	var sockErr error
	select {
	case <-s.sockets.empty:
	case <-ctx.Done():
		for _, sock := range s.sockets.close() {
			_ = sock.conn.Close()
		}
		sockErr = fmt.Errorf("close websockets: %w", ctx.Err())
	}
	return errors.Join(errors.Join(directErrs...), actorErr, sockErr, errors.Join(httpErrs...))
}

// drainBudget returns the context the drain of the requests and
// handshakes in flight runs under: ctx, ending when half of the time left
// before ctx's deadline is up, so that the actors' shutdown always has the
// other half. A handshake
// can take a header timeout to arrive and an authentication timeout to be
// decided, each as long as the default server.shutdown_timeout: waiting
// for it to the end would leave the actors nothing. Without a deadline the
// drain waits as long as ctx does.
func drainBudget(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, time.Now().Add(time.Until(deadline)/2))
}

// touch records activity for /server_info's idle_time.
func (s *Server) touch() { s.lastActive.Store(time.Now().UnixNano()) }
