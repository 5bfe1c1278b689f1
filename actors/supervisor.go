package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/trace"

	"github.com/agent-server/agent-server/core"
)

// supervisor is the connection supervisor: it runs authenticator chains off
// its mailbox, spawns one connection actor per upgraded socket as its child,
// and closes them all on shutdown.
type supervisor struct {
	sys      *System
	children map[string]*connChild
	closing  *core.Disconnect // set by CloseConnections
	waiters  []*actor.PID     // senders of CloseConnections
	// connProps spawns every connection actor: its producer hands over
	// spawning, which Spawn calls it for at once, on this goroutine. One
	// Props for all saves building one per socket. Connections are never
	// restarted (stopCrashed stops them), so the producer runs once per
	// actor. Their mailboxes are protoactor's lock-free linked queues: an
	// idle socket's actor then holds no ring buffer (the default mailbox
	// allocates one, some 300 bytes, per actor).
	connProps *actor.Props
	spawning  *connection
}

// connChild is one connection actor: what Revalidate needs to check it
// again, and its stage, which the actor sets and a census counts.
type connChild struct {
	recheck
	stage atomic.Int32 // a connStage
}

// recheck is what Revalidate needs to check a connection again.
type recheck struct {
	pid     *actor.PID
	convID  string
	request *core.Request     // nil: not revalidated (no credential, or still authenticating)
	audit   *core.AuditRecord // who the socket is, for a revocation's audit record
}

func newSupervisor(s *System) *supervisor {
	sv := &supervisor{sys: s, children: make(map[string]*connChild)}
	sv.connProps = actor.PropsFromProducer(func() actor.Actor {
		c := sv.spawning
		sv.spawning = nil // the actor is not kept here past its spawn
		return c
	}, s.dispatched(), actor.WithMailbox(actor.UnboundedLockfree()))
	return sv
}

// Receive handles the supervisor's messages.
func (sv *supervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *authenticate:
		sv.authenticate(ctx, m)
	case *authenticated:
		sv.answer(ctx, m)
	case *spawnConnection:
		if sv.closing != nil {
			m.Reply <- &connectionRefused{Reason: *sv.closing}
			return
		}
		// The actor is built from m here, so that nothing keeps m (and its
		// reply channel) for the socket's life.
		ch := &connChild{recheck: recheck{convID: m.ConversationID, audit: m.Audit}}
		sv.spawning = newConnection(sv.sys, m, &ch.stage)
		pid := ctx.Spawn(sv.connProps)
		ch.pid = pid
		if !m.FirstMessage {
			ch.request = m.Request
		}
		sv.children[pid.Id] = ch
		m.Reply <- &connectionSpawned{PID: pid}
	case *revalidateConnections:
		sv.revalidate(ctx, m)
	case *countConnections:
		var n connectionsCounted
		for _, ch := range sv.children {
			n.ByStage[ch.stage.Load()]++
		}
		ctx.Respond(&n)
	case *closeConnections:
		reason := m.Reason
		sv.closing = &reason
		sv.waiters = append(sv.waiters, ctx.Sender())
		for _, ch := range sv.children {
			ctx.Send(ch.pid, &closeConnection{Reason: reason})
		}
		sv.notifyIfEmpty(ctx)
	case *actor.Terminated:
		releaseStoppedChild(ctx)
		delete(sv.children, m.Who.Id)
		sv.notifyIfEmpty(ctx)
	case *actor.Restarting:
		// Children are being stopped by protoactor; each closes its
		// socket with 1011 on the way out (see connection.stopping).
	}
}

// authenticate runs a first-message connection's chain in a goroutine, so
// a slow plugin never holds up the mailbox; the result comes back through
// the supervisor (authenticated), which records what it allowed.
// Handshakes do not come here: System.Authenticate runs their chains.
func (sv *supervisor) authenticate(ctx actor.Context, m *authenticate) {
	chain := sv.sys.chains.Chain(m.Request.Route)
	if chain == nil {
		sv.answer(ctx, &authenticated{Route: m.Request.Route, Conn: m.Conn, Request: m.Request,
			Result: core.Failed(fmt.Errorf("no authenticator chain for route %q", m.Request.Route))})
		return
	}
	self, root, metrics := ctx.Self(), ctx.ActorSystem().Root, sv.sys.metrics
	sv.sys.Go(func() { // a pooled goroutine, as System.Authenticate's
		cctx, cancel := context.WithDeadline(withSpan(m.Trace), m.Deadline)
		defer cancel()
		start := time.Now()
		res := runChain(cctx, chain, m.Request)
		metrics.chainRan(m.Request.Route, start)
		root.Send(self, &authenticated{Route: m.Request.Route, Conn: m.Conn, Request: m.Request, Result: res, Trace: m.Trace})
	})
}

// runChain runs chain under ctx (its deadline bounds the plugins) and
// turns a panic into an Error.
func runChain(ctx context.Context, chain *core.Chain, req *core.Request) (res core.Result) {
	defer func() {
		if r := recover(); r != nil {
			res = chainPanicked(req.Route, r)
		}
	}()
	return checkChain(chain.Authenticate(ctx, req))
}

// settleChain is runChain for a chain its authenticators settle at once
// (core.Chain.Settle); ok is false when they cannot. A panic is settled,
// as an Error.
func settleChain(chain *core.Chain, req *core.Request) (res core.Result, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			res, ok = chainPanicked(req.Route, r), true
		}
	}()
	if res, ok = chain.Settle(req); !ok {
		return res, false
	}
	return checkChain(res), true
}

// chainPanicked is the Error of a chain that panicked with r.
func chainPanicked(route core.Route, r any) core.Result {
	return core.Failed(fmt.Errorf("authenticator chain %q panicked: %v", route, r))
}

// checkChain fails closed on what a chain must never answer.
func checkChain(res core.Result) core.Result {
	if res.Decision == core.Allow && res.Principal == nil {
		return core.Failed(errors.New("chain allowed without a principal"))
	}
	if res.Decision == core.Abstain { // a chain never abstains; fail closed if one does
		return core.Denied(core.ReasonNoCredentials)
	}
	return res
}

// answer hands a first-message connection its chain's outcome; it is
// revalidated with that request from then on.
func (sv *supervisor) answer(ctx actor.Context, m *authenticated) {
	logOutcome(sv.sys.log, m.Route, m.Result, m.Trace)
	if ch := sv.children[m.Conn.Id]; ch != nil && m.Result.Decision == core.Allow {
		ch.request = m.Request
	}
	ctx.Send(m.Conn, m)
}

// withSpan is a background context carrying sc, the caller's span, for
// the plugin calls' spans to be its children; just the background when
// the caller is not traced.
func withSpan(sc trace.SpanContext) context.Context {
	if !sc.IsValid() {
		return context.Background()
	}
	return trace.ContextWithSpanContext(context.Background(), sc)
}

// logOutcome logs a decision and the authenticator that made it, never a
// credential: an allow and a deny at debug level, an error as a warning.
// The lines carry the request's trace ID when it is traced.
func logOutcome(log *slog.Logger, route core.Route, res core.Result, sc trace.SpanContext) {
	level := slog.LevelDebug
	if res.Decision == core.Error {
		level = slog.LevelWarn
	}
	if !log.Enabled(context.Background(), level) {
		return
	}
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	switch res.Decision {
	case core.Allow:
		log.DebugContext(ctx, "authentication allowed", "route", route, "authenticator", res.Authenticator, "subject", res.Principal.Subject)
	case core.Deny:
		log.DebugContext(ctx, "authentication denied", "route", route, "authenticator", res.Authenticator, "reason", res.Reason)
	case core.Error:
		log.WarnContext(ctx, "authentication failed to decide", "route", route, "authenticator", res.Authenticator, "err", res.Err)
	}
}

// revalidateParallel bounds the chain runs of one Revalidate.
const revalidateParallel = 8

// revalidate re-runs each open socket's credential through the current
// chain in a goroutine, which closes the sockets no longer allowed with
// 4001 "Credential revoked" and reports the count on m.Reply. A chain that
// cannot decide (Error) keeps its socket: an unreachable plugin is no
// revocation.
func (sv *supervisor) revalidate(ctx actor.Context, m *revalidateConnections) {
	var todo []recheck
	for _, ch := range sv.children {
		if ch.request != nil {
			todo = append(todo, ch.recheck)
		}
	}
	root, chains, log, sys := ctx.ActorSystem().Root, sv.sys.chains, sv.sys.log, sv.sys
	go func() {
		var (
			mu     sync.Mutex
			closed int
			wg     sync.WaitGroup
			slots  = make(chan struct{}, revalidateParallel)
		)
		for _, ch := range todo {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-slots; wg.Done() }()
				res, ok := stillAllowed(chains, ch, log)
				if ok {
					return
				}
				sys.auditRevoked(ch.audit, res)
				root.Send(ch.pid, &closeConnection{Reason: core.DisconnectRevoked})
				mu.Lock()
				closed++
				mu.Unlock()
			}()
		}
		wg.Wait()
		m.Reply <- closed
	}()
}

// stillAllowed runs ch's credential through its route's current chain, and
// returns the result and whether the socket may stay.
func stillAllowed(chains Chains, ch recheck, log *slog.Logger) (core.Result, bool) {
	chain := chains.Chain(ch.request.Route)
	if chain == nil {
		return core.Result{}, true // no chain is a configuration error, not a revocation
	}
	ctx, cancel := context.WithTimeout(context.Background(), authTimeout)
	defer cancel()
	res := runChain(ctx, chain, ch.request)
	switch res.Decision {
	case core.Allow:
		return res, !res.Principal.Expired(time.Now()) && res.Principal.CanAccess(ch.convID) &&
			(ch.request.Route != core.RouteRuntime || res.Principal.HasRole(core.RoleRuntime))
	case core.Error:
		log.Warn("revalidation could not decide; the socket stays", "route", ch.request.Route, "authenticator", res.Authenticator, "err", res.Err)
		return res, true
	}
	return res, false
}

// Revalidate re-runs every open socket's original credential through the
// current chain and closes those no longer allowed with 4001 "Credential
// revoked"; it returns how many it closed. Sockets whose chain cannot decide
// stay open. The config reloader calls it when auth.revalidate_on_reload is
// on, after the plugin host has swapped keys and emptied its cache.
func (s *System) Revalidate(ctx context.Context) int {
	if s.closing.Load() {
		return 0
	}
	reply := make(chan int, 1)
	s.root.Send(s.supervisor, &revalidateConnections{Reply: reply})
	select {
	case n := <-reply:
		return n
	case <-ctx.Done():
		return 0
	}
}

// ChainHas reports whether route's current chain lists the authenticator
// name. The edge asks it to decide whether a socket whose handshake carried
// no credential may authenticate by its first message.
func (s *System) ChainHas(route core.Route, name string) bool {
	chain := s.chains.Chain(route)
	return chain != nil && slices.Contains(chain.Names(), name)
}

// Retain returns the copy of req a connection keeps for revalidation: what
// its route's chain reads of it (see core.Chain.Retain), or nil when the
// route has no chain, since then there is nothing to re-run.
func (s *System) Retain(req *core.Request) *core.Request {
	chain := s.chains.Chain(req.Route)
	if chain == nil {
		return nil
	}
	return chain.Retain(req)
}

func (sv *supervisor) notifyIfEmpty(ctx actor.Context) {
	if sv.closing == nil || len(sv.children) > 0 {
		return
	}
	for _, w := range sv.waiters {
		if w != nil {
			ctx.Send(w, &connectionsClosed{})
		}
	}
	sv.waiters = nil
}
