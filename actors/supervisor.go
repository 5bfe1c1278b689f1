package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// supervisor is the connection supervisor: it runs authenticator chains off
// its mailbox, spawns one connection actor per upgraded socket as its child,
// and closes them all on shutdown.
type supervisor struct {
	sys      *System
	children map[string]*actor.PID
	closing  *core.Disconnect // set by CloseConnections
	waiters  []*actor.PID     // senders of CloseConnections
}

func newSupervisor(s *System) *supervisor {
	return &supervisor{sys: s, children: make(map[string]*actor.PID)}
}

// Receive handles the supervisor's messages.
func (sv *supervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *authenticate:
		sv.authenticate(ctx, m)
	case *authenticated:
		sv.answer(m)
	case *spawnConnection:
		if sv.closing != nil {
			ctx.Respond(&connectionRefused{Reason: *sv.closing})
			return
		}
		pid := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return newConnection(sv.sys, m) }))
		sv.children[pid.Id] = pid
		ctx.Respond(&connectionSpawned{PID: pid})
	case *closeConnections:
		reason := m.Reason
		sv.closing = &reason
		sv.waiters = append(sv.waiters, ctx.Sender())
		for _, pid := range sv.children {
			ctx.Send(pid, &closeConnection{Reason: reason})
		}
		sv.notifyIfEmpty(ctx)
	case *actor.Terminated:
		delete(sv.children, m.Who.Id)
		sv.notifyIfEmpty(ctx)
	case *actor.Restarting:
		// Children are being stopped by protoactor; each closes its
		// socket with 1011 on the way out (see connection.stopping).
	}
}

// authenticate starts the chain in a goroutine, which reports back with
// authenticated, so a slow plugin never holds up the mailbox.
func (sv *supervisor) authenticate(ctx actor.Context, m *authenticate) {
	chain := sv.sys.chains.Chain(m.Request.Route)
	if chain == nil {
		sv.answer(&authenticated{Route: m.Request.Route, Reply: m.Reply,
			Result: core.Failed(fmt.Errorf("no authenticator chain for route %q", m.Request.Route))})
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	go func() {
		root.Send(self, &authenticated{Route: m.Request.Route, Reply: m.Reply, Result: runChain(chain, m)})
	}()
}

// runChain runs chain until m.Deadline and turns a panic into an Error.
func runChain(chain *core.Chain, m *authenticate) (res core.Result) {
	defer func() {
		if r := recover(); r != nil {
			res = core.Failed(fmt.Errorf("authenticator chain %q panicked: %v", m.Request.Route, r))
		}
	}()
	ctx, cancel := context.WithDeadline(context.Background(), m.Deadline)
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

// answer logs a chain's outcome, without any credential, and hands it to
// the waiting caller. Reply has room for one result, so this never blocks.
func (sv *supervisor) answer(m *authenticated) {
	switch m.Result.Decision {
	case core.Deny:
		sv.sys.log.Debug("authentication denied", "route", m.Route, "authenticator", m.Result.Authenticator, "reason", m.Result.Reason)
	case core.Error:
		sv.sys.log.Warn("authentication failed to decide", "route", m.Route, "authenticator", m.Result.Authenticator, "err", m.Result.Err)
	}
	select {
	case m.Reply <- m.Result:
	default:
	}
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
