package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// Chains gives the current authenticator chain of a route. The plugin host
// implements it and may swap chains on reload, so the supervisor asks for the
// chain on every request and never keeps it.
type Chains interface {
	Chain(route core.Route) *core.Chain
}

// Options configures a System.
type Options struct {
	Store  core.Store
	Chains Chains
	Logger *slog.Logger
	Limits config.Limits
	// Conversations sets the conversation actors' idle_timeout, after which
	// an idle actor is passivated; 0 never passivates.
	Conversations config.Conversations
	// Cluster, when enabled, runs this node as a cluster member
	// (placement.go): the store must fence (core.Fencer, postgres).
	Cluster config.Cluster
	// Metrics registers the system's collectors (metrics.go); nil measures
	// nothing.
	Metrics prometheus.Registerer
	// StoreDriver labels the store's metrics (storage.driver).
	StoreDriver string
	// Audit receives one record per authentication decision, revocation
	// and expiry (audit.go); nil writes none.
	Audit core.AuditSink
}

// Timeouts for calls into the actors when the caller's context has no
// earlier deadline.
const (
	authTimeout    = 10 * time.Second // a whole chain run
	requestTimeout = 10 * time.Second // an append, a delete, a spawn
	attachTimeout  = 10 * time.Second // a connection waiting for its conversation
)

// defaultSubscribers is limits.subscribers_per_conversation when unset.
const defaultSubscribers = 50

// ErrShutdown is returned by calls made after Shutdown began.
var ErrShutdown = errors.New("actor system is shutting down")

// System owns the actor system: the connection supervisor, the conversation
// registry and, below them, one actor per connection and per conversation.
// Its methods are safe for concurrent use.
type System struct {
	sys        *actor.ActorSystem
	root       *actor.RootContext
	supervisor *actor.PID
	registry   *actor.PID
	store      core.Store
	chains     Chains
	log        *slog.Logger
	limits     config.Limits
	// conversations configures the conversation actors (passivation).
	conversations config.Conversations
	// writer group-commits the conversation actors' appends to store.
	writer  *writer
	metrics *metrics       // nil measures nothing
	audit   core.AuditSink // nil writes no audit log
	// placement is cluster mode's handle on the cluster; nil on a single
	// node.
	placement *placement
	// dispatch runs the mailboxes of the actors spawned here on pooled
	// goroutines (dispatch.go).
	dispatch *dispatcher

	closing  atomic.Bool
	reason   atomic.Pointer[core.Disconnect] // how Shutdown closes sockets; nil: 1001
	shutdown sync.Once
	step     atomic.Pointer[shutdownStep] // what Shutdown waits for now
	stopped  chan struct{}
	stopErr  error
}

// shutdownStep is one step of Shutdown, for the error that says where a
// shutdown that ran out of time was.
type shutdownStep struct {
	what  string
	since time.Time
}

// Shutdown's steps.
const (
	stepCloseConnections = "closing connections"
	stepStopSupervisor   = "stopping the connection supervisor"
	stepStopRegistry     = "stopping the conversation registry"
	stepFlushWriter      = "flushing the event writer"
	stepLeaveCluster     = "leaving the cluster"
)

// censusTimeout bounds the count of open connections that a shutdown out
// of time reports: the caller's deadline has passed by then, so it is
// short (the supervisor answers in microseconds when it can).
const censusTimeout = 100 * time.Millisecond

// New starts the actor system with its connection supervisor and its
// conversation registry.
func New(opts Options) (*System, error) {
	if opts.Store == nil {
		return nil, errors.New("actors: Options.Store is required")
	}
	if opts.Chains == nil {
		return nil, errors.New("actors: Options.Chains is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	limits := opts.Limits
	if limits.SubscribersPerConversation <= 0 {
		limits.SubscribersPerConversation = defaultSubscribers
	}
	actorLog := log.With("component", "protoactor")
	sys := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return actorLog }),
		actor.WithDeadLetterRequestLogging(false),
	)
	stripeRegistry(sys, processBuckets())
	s := &System{
		sys:     sys,
		root:    sys.Root,
		store:   opts.Store,
		chains:  opts.Chains,
		log:     log,
		limits:  limits,
		stopped: make(chan struct{}),

		conversations: opts.Conversations,
		audit:         opts.Audit,
		dispatch:      newDispatcher(mailboxThroughput),
	}
	s.metrics = newMetrics(opts.Metrics, s, opts.StoreDriver)
	s.writer = newWriter(opts.Store, s.root, log, s.metrics)
	if opts.Cluster.Enabled {
		if _, ok := opts.Store.(core.Fencer); !ok {
			_ = s.writer.close(context.Background())
			sys.Shutdown()
			s.dispatch.close()
			return nil, errors.New("actors: cluster mode needs a store that fences (storage.driver: postgres)")
		}
		// Before any actor that other nodes address is spawned: PIDs take
		// the remote's address at spawn.
		p, err := startPlacement(sys, opts.Cluster, s.conversationProps(), log.With("component", "cluster"))
		if err != nil {
			_ = s.writer.close(context.Background())
			sys.Shutdown()
			s.dispatch.close()
			return nil, err
		}
		s.placement = p
		s.metrics.watchPlacement(p)
	}
	var err error
	// Both top-level actors restart in place after a panic, at most 10 times
	// in 10 s; a restart stops their children first (see the package doc).
	guardian := actor.WithGuardian(actor.NewOneForOneStrategy(10, 10*time.Second, restart))
	s.registry, err = s.root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newRegistry(s) },
		guardian, actor.WithSupervisor(actor.NewOneForOneStrategy(0, 10*time.Second, s.stopCrashed("conversation"))), s.dispatched()),
		"conversations")
	if err != nil {
		_ = s.writer.close(context.Background())
		sys.Shutdown()
		s.dispatch.close()
		return nil, fmt.Errorf("spawn conversation registry: %w", err)
	}
	s.supervisor, err = s.root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newSupervisor(s) },
		guardian, actor.WithSupervisor(actor.NewOneForOneStrategy(0, 10*time.Second, s.stopCrashed("connection"))), s.dispatched()),
		"connections")
	if err != nil {
		s.root.Stop(s.registry)
		_ = s.writer.close(context.Background())
		sys.Shutdown()
		s.dispatch.close()
		return nil, fmt.Errorf("spawn connection supervisor: %w", err)
	}
	return s, nil
}

// mailboxThroughput is how many messages an actor handles per mailbox run
// before it yields, protoactor's default.
const mailboxThroughput = 300

// dispatched is the props option that runs an actor's mailbox on the
// system's pooled goroutines (dispatch.go).
func (s *System) dispatched() actor.PropsOption { return actor.WithDispatcher(s.dispatch) }

// restart is the decider of the two top-level actors.
func restart(any) actor.Directive { return actor.RestartDirective }

// releaseStoppedChild drops the reference that protoactor keeps to a
// stopped child. Its child set removes a PID by shrinking its slice, so the
// vacated slot past the end still points at the PID, and a PID caches its
// process: that would pin the whole stopped actor (a connection's socket and
// request, a conversation's state) until a later spawn reuses the slot. Call
// it on each Terminated for a child, when exactly that slot was vacated.
func releaseStoppedChild(ctx actor.Context) {
	if kids := ctx.Children(); len(kids) < cap(kids) {
		kids[:len(kids)+1][len(kids)] = nil
	}
}

// stopCrashed returns the decider for connection and conversation actors: a
// panic stops the actor that panicked, never its siblings, and is logged.
func (s *System) stopCrashed(kind string) actor.DeciderFunc {
	return func(reason any) actor.Directive {
		s.log.Error("actor crashed; stopping it", "actor", kind, "panic", fmt.Sprint(reason))
		return actor.StopDirective
	}
}

// Go runs fn on one of the system's pooled goroutines, whose stacks have
// grown already (see dispatcher): for work as deep as a WebSocket
// handshake, which on a new goroutine grows its stack by copying it.
func (s *System) Go(fn func()) { s.dispatch.Schedule(fn) }

// Authenticate runs req.Route's chain and returns its result. It fails
// closed: a missing chain, a panic, the end of ctx or a timeout is an Error
// result, never an Allow. A chain that its authenticators settle at once
// (core.Chain.Settle: cached decisions, absent inputs) is answered on the
// caller's goroutine, unless the request is sampled for tracing. So is a
// chain of core.Bounded authenticators (plugin processes), whose waits end
// with the context. Any other runs on a pooled goroutine, so an
// authenticator that ignores its deadline never holds the caller past it.
// One context, the caller's bounded by authTimeout, bounds both the
// plugins and the wait: it carries the caller's span, and a caller that
// gives up (its client went away) ends the run, which gives back its
// queue place and plugin slot.
func (s *System) Authenticate(ctx context.Context, req *core.Request) core.Result {
	if s.closing.Load() {
		return core.Failed(ErrShutdown)
	}
	sc := trace.SpanContextFromContext(ctx)
	chain := s.chains.Chain(req.Route)
	if chain == nil {
		res := core.Failed(fmt.Errorf("no authenticator chain for route %q", req.Route))
		logOutcome(s.log, req.Route, res, sc)
		return res
	}
	// A chain its authenticators settle at once (a cached decision, above
	// all) runs here: the hop below, its context and its timer cost more
	// than the lookup. A sampled request takes the hop, for its spans; a
	// caller already gone gets the hop's Error.
	if !sc.IsSampled() && ctx.Err() == nil {
		start := time.Now()
		if res, ok := settleChain(chain, req); ok {
			s.metrics.chainRan(req.Route, start)
			logOutcome(s.log, req.Route, res, sc)
			return res
		}
	}
	cctx, cancel := context.WithTimeout(ctx, authTimeout)
	if chain.Bounded() {
		// Its authenticators return once cctx ends: the run needs no
		// goroutine of its own to bound the wait, and in a reconnect
		// storm, where every handshake's run found the pool empty, that
		// goroutine was a new one each time.
		start := time.Now()
		res := runChain(cctx, chain, req)
		cancel()
		s.metrics.chainRan(req.Route, start)
		logOutcome(s.log, req.Route, res, sc)
		return res
	}
	reply := make(chan core.Result, 1)
	// On one of the dispatcher's pooled goroutines: on a new one, the
	// chain (the decision cache's SHA-256 above all) grew the stack by
	// copying it twice per handshake.
	s.dispatch.Schedule(func() {
		defer cancel()
		start := time.Now()
		res := runChain(cctx, chain, req)
		s.metrics.chainRan(req.Route, start)
		reply <- res // before cancel: a waiter woken by the cancel finds it
	})
	var res core.Result
	select {
	case res = <-reply:
	case <-cctx.Done():
		select {
		case res = <-reply:
		default:
			res = core.Failed(fmt.Errorf("authenticate %s: %w", req.Route, cctx.Err()))
		}
	}
	logOutcome(s.log, req.Route, res, sc)
	return res
}

// await waits for the one answer an actor sends to reply: at most d, and
// no longer than ctx lasts (context.DeadlineExceeded after d).
func await[T any](ctx context.Context, reply <-chan T, d time.Duration) (T, error) {
	timer := timers.Get().(*time.Timer)
	timer.Reset(d)
	defer func() {
		timer.Stop() // since Go 1.23 no stale tick is left in its channel
		timers.Put(timer)
	}()
	select {
	case v := <-reply:
		return v, nil
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	case <-timer.C:
		var zero T
		return zero, context.DeadlineExceeded
	}
}

// timers are stopped timers for await to reuse: every connect waits on
// one, and a new timer per connect was garbage for the collector.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// Connect starts the connection actor of an upgraded socket. The actor
// attaches to conversationID's actor, which sends the full_state frame and
// the replay to t, or closes t (4004 unknown, 1013 full). Connect does not
// wait for the attach; if the system is shutting down it closes t with 1001
// and returns a Conn whose methods do nothing.
func (s *System) Connect(t Transport, p *core.Principal, conversationID string, replay Replay) *Conn {
	return s.ConnectSocket(t, Attach{Principal: p, ConversationID: conversationID, Replay: replay})
}

// CreateConversation stores c unless its ID exists, and returns the stored
// conversation and whether it was created. Its actor starts on first use.
func (s *System) CreateConversation(ctx context.Context, c *core.Conversation) (*core.Conversation, bool, error) {
	if s.closing.Load() {
		return nil, false, ErrShutdown
	}
	id, err := core.NormalizeID(c.ID)
	if err != nil {
		return nil, false, fmt.Errorf("create conversation: %w", err)
	}
	c = c.Clone()
	c.ID = id
	stored, created, err := s.store.CreateConversation(ctx, c)
	if err != nil {
		return nil, false, fmt.Errorf("create conversation %s: %w", id, err)
	}
	return stored, created, nil
}

// PostEvent appends an event to the conversation through its actor, which
// broadcasts it to every socket, and returns the sealed event. An unknown
// conversation is an error wrapping core.ErrNotFound. With an idempotency
// key in ctx (WithIdempotencyKey), a retry of an earlier post appends
// nothing and returns that post's event; the key with another body fails
// with core.ErrKeyReused.
func (s *System) PostEvent(ctx context.Context, conversationID string, source core.Source, kind string, body json.RawMessage) (*core.Event, error) {
	if !source.Valid() {
		return nil, fmt.Errorf("post event to %s: unknown source %q", conversationID, source)
	}
	if kind == "" {
		return nil, fmt.Errorf("post event to %s: empty kind", conversationID)
	}
	key := idempotencyKey(ctx)
	res, err := s.request(ctx, s.registry, &appendEvent{ConversationID: conversationID, Source: source, Kind: kind, Body: body, Key: key, CheckKey: key != ""})
	if err != nil {
		return nil, fmt.Errorf("post event to %s: %w", conversationID, err)
	}
	switch m := res.(type) {
	case *eventAppended:
		return m.Event, nil
	case *commandFailed:
		return nil, fmt.Errorf("post event to %s: %w", conversationID, m.Err)
	}
	return nil, fmt.Errorf("post event to %s: unexpected answer %T", conversationID, res)
}

// deleteConversation closes the conversation's sockets with 4004 "Conversation
// not found" and removes it and its events from the store. An unknown
// conversation is an error wrapping core.ErrNotFound.
func (s *System) DeleteConversation(ctx context.Context, id string) error {
	res, err := s.request(ctx, s.registry, &deleteConversation{ConversationID: id})
	if err != nil {
		return fmt.Errorf("delete conversation %s: %w", id, err)
	}
	switch m := res.(type) {
	case *conversationDeleted:
		return nil
	case *commandFailed:
		return fmt.Errorf("delete conversation %s: %w", id, m.Err)
	}
	return fmt.Errorf("delete conversation %s: unexpected answer %T", id, res)
}

// Shutdown closes every socket with 1001 "Server shutting down", waits until
// every connection actor has stopped, then stops the conversation actors and
// the actor system. It returns early with ctx's error if ctx ends first.
// Calling it again waits for the first call's outcome.
func (s *System) Shutdown(ctx context.Context) error {
	s.shutdown.Do(func() {
		s.closing.Store(true)
		s.enter(stepCloseConnections)
		go func() {
			defer close(s.stopped)
			reason := core.DisconnectShutdown
			if d := s.reason.Load(); d != nil {
				reason = *d
			}
			_, err := s.root.RequestFuture(s.supervisor, &closeConnections{Reason: reason}, requestTimeout).Result()
			if err != nil {
				s.stopErr = fmt.Errorf("close connections: %s: %w", s.openConnections(), err)
			}
			s.enter(stepStopSupervisor)
			_ = s.root.StopFuture(s.supervisor).Wait()
			s.enter(stepStopRegistry)
			_ = s.root.StopFuture(s.registry).Wait()
			// Whatever the conversation actors handed the writer is
			// committed before Shutdown returns, and, in cluster mode,
			// before the activations here stop: their appends in flight
			// are answered as stored, and their relays on other nodes
			// attach to the new owners.
			s.enter(stepFlushWriter)
			if err := s.writer.close(context.Background()); err != nil && s.stopErr == nil {
				s.stopErr = fmt.Errorf("flush event writer: %w", err)
			}
			if s.placement != nil {
				s.enter(stepLeaveCluster)
				s.placement.shutdown() // shuts the actor system down too
			} else {
				s.sys.Shutdown()
			}
			s.dispatch.close()
		}()
	})
	select {
	case <-s.stopped:
		return s.stopErr
	case <-ctx.Done():
		return fmt.Errorf("shut down actors: %s: %w", s.where(), ctx.Err())
	}
}

// enter records that Shutdown begins step what.
func (s *System) enter(what string) {
	s.step.Store(&shutdownStep{what: what, since: time.Now()})
}

// where says which step Shutdown is at and for how long: "closing
// connections for 0s" tells that the caller's context was spent before
// Shutdown was called. While closing connections it adds how many are
// still open, by stage.
func (s *System) where() string {
	step := s.step.Load()
	if step == nil {
		return "not begun"
	}
	at := fmt.Sprintf("still %s after %s", step.what, time.Since(step.since).Round(time.Millisecond))
	if step.what == stepCloseConnections {
		at += " (" + s.openConnections() + ")"
	}
	return at
}

// openConnections asks the supervisor how many connection actors are
// still open, by stage: counts only.
func (s *System) openConnections() string {
	res, err := s.root.RequestFuture(s.supervisor, &countConnections{}, censusTimeout).Result()
	n, ok := res.(*connectionsCounted)
	switch {
	case errors.Is(err, actor.ErrDeadLetter):
		return "the connection supervisor has stopped"
	case err != nil || !ok:
		return "the connection supervisor did not say how many are open"
	}
	return n.String()
}

// String says how many connections are open, by stage: "2 open: 1
// attaching, 1 closing".
func (n *connectionsCounted) String() string {
	total := 0
	var parts []string
	for stage, k := range n.ByStage {
		if k > 0 {
			total += k
			parts = append(parts, fmt.Sprintf("%d %s", k, connStage(stage)))
		}
	}
	if total == 0 {
		return "no connection open"
	}
	return fmt.Sprintf("%d open: %s", total, strings.Join(parts, ", "))
}

// request sends msg to pid and waits for the answer until ctx's deadline or
// requestTimeout, whichever comes first.
func (s *System) request(ctx context.Context, pid *actor.PID, msg any) (any, error) {
	return s.requestWithin(ctx, pid, msg, requestTimeout)
}

// requestWithin is request with another bound than requestTimeout.
func (s *System) requestWithin(ctx context.Context, pid *actor.PID, msg any, timeout time.Duration) (any, error) {
	if s.closing.Load() {
		return nil, ErrShutdown
	}
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	res, err := s.root.RequestFuture(pid, msg, timeout).Result()
	switch {
	case errors.Is(err, actor.ErrTimeout):
		return nil, fmt.Errorf("no answer within %s: %w", timeout, context.DeadlineExceeded)
	case errors.Is(err, actor.ErrDeadLetter):
		if s.closing.Load() {
			return nil, ErrShutdown
		}
		return nil, errors.New("the actor stopped before answering; retry")
	case err != nil:
		return nil, err
	}
	return res, nil
}

// Conn is the edge's handle on one connection actor.
type Conn struct {
	root *actor.RootContext
	pid  *actor.PID
}

// Deliver hands the connection one inbound text frame. The caller passes a
// copy that it does not touch afterwards.
func (c *Conn) Deliver(frame []byte) {
	if c.pid != nil {
		c.root.Send(c.pid, &deliverFrame{Data: frame})
	}
}

// Closed tells the connection that its peer closed or its socket failed.
func (c *Conn) Closed() {
	if c.pid != nil {
		c.root.Send(c.pid, &peerClosed{})
	}
}

// CloseWith sets how Shutdown closes the sockets (1001 by default): a node
// leaving the cluster to restart closes them with 1012.
func (s *System) CloseWith(d core.Disconnect) { s.reason.Store(&d) }

// ClusterReady reports nil once this node has joined the cluster (and
// always on a single node), else why not: /ready waits for it.
func (s *System) ClusterReady(ctx context.Context) error {
	if s.placement == nil {
		return nil
	}
	return s.placement.Ready(ctx)
}

// Topology is what this node sees of the cluster.
type Topology struct {
	Self    string   `json:"self"`    // this node's remote address
	Members []Member `json:"members"` // the members it sees, itself included
	Owned   int64    `json:"owned"`   // conversations activated on this node
}

// Topology returns what this node sees of the cluster; ok is false on a
// single node.
func (s *System) Topology() (t Topology, ok bool) {
	if s.placement == nil {
		return Topology{}, false
	}
	return Topology{Self: s.placement.self, Members: s.placement.Members(), Owned: s.placement.owned.Load()}, true
}

// Left is closed when this node must leave the cluster and restart as a new
// member (the others dropped it: see placement.probe); nil on a single
// node.
func (s *System) Left() <-chan struct{} {
	if s.placement == nil {
		return nil
	}
	return s.placement.left
}
