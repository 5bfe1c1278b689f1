package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
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
}

// connChild is one connection actor and what Revalidate needs to check it again.
type connChild struct {
	pid     *actor.PID
	convID  string
	request *core.Request    // nil: not revalidated (no credential, or still authenticating)
	audit   core.AuditRecord // who the socket is, for a revocation's audit record
}

func newSupervisor(s *System) *supervisor {
	return &supervisor{sys: s, children: make(map[string]*connChild)}
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
		// The producer captures the actor, not m, which the actor would
		// otherwise pin (with its reply channel) for the socket's life.
		// Connections are never restarted, so one instance is enough.
		conn := newConnection(sv.sys, m)
		pid := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return conn }))
		ch := &connChild{pid: pid, convID: m.ConversationID, audit: m.Audit}
		if !m.FirstMessage {
			ch.request = m.Request
		}
		sv.children[pid.Id] = ch
		m.Reply <- &connectionSpawned{PID: pid}
	case *revalidateConnections:
		sv.revalidate(ctx, m)
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

// authenticate starts the chain in a goroutine, so a slow plugin never
// holds up the mailbox. A handshake's result goes straight from there to
// the waiting caller's Reply channel; a connection actor's comes back
// through the supervisor (authenticated), which records what it allowed.
func (sv *supervisor) authenticate(ctx actor.Context, m *authenticate) {
	chain := sv.sys.chains.Chain(m.Request.Route)
	if chain == nil {
		sv.answer(ctx, &authenticated{Route: m.Request.Route, Reply: m.Reply, Conn: m.Conn, Request: m.Request,
			Result: core.Failed(fmt.Errorf("no authenticator chain for route %q", m.Request.Route))})
		return
	}
	self, root, log, metrics := ctx.Self(), ctx.ActorSystem().Root, sv.sys.log, sv.sys.metrics
	go func() {
		start := time.Now()
		a := &authenticated{Route: m.Request.Route, Reply: m.Reply, Conn: m.Conn, Request: m.Request, Result: runChain(chain, m), Trace: m.Trace}
		metrics.chainRan(m.Request.Route, start)
		if a.Conn != nil {
			root.Send(self, a)
			return
		}
		a.reply(log)
	}()
}

// runChain runs chain until m.Deadline and turns a panic into an Error.
func runChain(chain *core.Chain, m *authenticate) (res core.Result) {
	defer func() {
		if r := recover(); r != nil {
			res = core.Failed(fmt.Errorf("authenticator chain %q panicked: %v", m.Request.Route, r))
		}
	}()
	ctx, cancel := context.WithDeadline(trace.ContextWithSpanContext(context.Background(), m.Trace), m.Deadline)
	defer cancel()
	res = chain.Authenticate(ctx, m.Request)
	if res.Decision == core.Allow && res.Principal == nil {
		return core.Failed(errors.New("chain allowed without a principal"))
	}
	if res.Decision == core.Abstain { // a chain never abstains; fail closed if one does
		return core.Denied(core.ReasonNoCredentials)
	}
	return res
}

// answer hands a chain's outcome to the waiting caller: a connection actor
// authenticating by its first message, which is then revalidated with that
// request, or the Reply channel.
func (sv *supervisor) answer(ctx actor.Context, m *authenticated) {
	if m.Conn == nil {
		m.reply(sv.sys.log)
		return
	}
	m.logOutcome(sv.sys.log)
	if ch := sv.children[m.Conn.Id]; ch != nil && m.Result.Decision == core.Allow {
		ch.request = m.Request
	}
	ctx.Send(m.Conn, m)
}

// reply logs the outcome and hands it to the Reply channel, which has room
// for one result, so this never blocks.
func (m *authenticated) reply(log *slog.Logger) {
	m.logOutcome(log)
	select {
	case m.Reply <- m.Result:
	default:
	}
}

// logOutcome logs the decision and the authenticator that made it, never
// a credential: an allow and a deny at debug level, an error as a warning.
// The lines carry the request's trace ID when it is traced.
func (m *authenticated) logOutcome(log *slog.Logger) {
	ctx := trace.ContextWithSpanContext(context.Background(), m.Trace)
	switch m.Result.Decision {
	case core.Allow:
		log.DebugContext(ctx, "authentication allowed", "route", m.Route, "authenticator", m.Result.Authenticator, "subject", m.Result.Principal.Subject)
	case core.Deny:
		log.DebugContext(ctx, "authentication denied", "route", m.Route, "authenticator", m.Result.Authenticator, "reason", m.Result.Reason)
	case core.Error:
		log.WarnContext(ctx, "authentication failed to decide", "route", m.Route, "authenticator", m.Result.Authenticator, "err", m.Result.Err)
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
	var todo []connChild
	for _, ch := range sv.children {
		if ch.request != nil {
			todo = append(todo, *ch)
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
func stillAllowed(chains Chains, ch connChild, log *slog.Logger) (core.Result, bool) {
	chain := chains.Chain(ch.request.Route)
	if chain == nil {
		return core.Result{}, true // no chain is a configuration error, not a revocation
	}
	res := runChain(chain, &authenticate{Request: ch.request, Deadline: time.Now().Add(authTimeout)})
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
