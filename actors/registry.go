package actors

import (
	"context"

	"github.com/asynkron/protoactor-go/actor"
)

// child is a running conversation actor and how many messages the registry
// has routed to it.
type child struct {
	pid    *actor.PID
	routed uint64
}

// registry addresses conversation actors by conversation ID. It spawns one,
// as its child, on the first message for a conversation, wraps every
// conversation-addressed message in routed (keeping the sender) and sends it
// there, and is where a conversation is deleted and where an idle actor is
// passivated, so that spawn, routing, passivation and delete are
// serialized. It never reads the store: a new actor loads itself and, if the
// conversation does not exist, refuses and asks to be forgotten.
type registry struct {
	sys *System
	// convs holds every conversation the registry knows: a running actor,
	// or nil for one passivated (stopped while idle) that is respawned on
	// its next message.
	convs map[string]*child
	byPID map[string]string // running actor's PID.Id -> conversation ID
}

func newRegistry(s *System) *registry {
	return &registry{sys: s, convs: make(map[string]*child), byPID: make(map[string]string)}
}

// Receive handles the registry's messages.
func (r *registry) Receive(ctx actor.Context) {
	if r.sys.placement != nil && r.toOwner(ctx) {
		return
	}
	switch m := ctx.Message().(type) {
	case *deleteConversation:
		r.startDelete(ctx, m)
	case *conversationRemoved:
		r.deleted(ctx, m)
	case *conversationEnded:
		if ch := r.convs[m.ConversationID]; ch != nil && ch.pid.Equal(m.PID) {
			r.forget(m.ConversationID, ch)
			delete(r.convs, m.ConversationID)
			ctx.Poison(m.PID)
		}
	case *conversationIdle:
		// Passivate only if nothing routed is still in the actor's mailbox.
		if ch := r.convs[m.ConversationID]; ch != nil && ch.pid.Equal(m.PID) && ch.routed == m.Received {
			r.forget(m.ConversationID, ch)
			r.convs[m.ConversationID] = nil
			ctx.Poison(m.PID)
			r.sys.log.Debug("conversation passivated", "conversation", m.ConversationID)
		}
	case *actor.Terminated:
		releaseStoppedChild(ctx)
		if id, ok := r.byPID[m.Who.Id]; ok {
			// Crashed: known still, respawned (and reloaded) on next use.
			r.forget(id, r.convs[id])
			r.convs[id] = nil
		}
	case *countConversations:
		active := 0
		for _, ch := range r.convs {
			if ch != nil {
				active++
			}
		}
		ctx.Respond(&conversationsCounted{Known: len(r.convs), Active: active})
	case *detachConnection:
		// Only a running actor can have the connection; never spawn one
		// just to detach.
		if r.convs[m.ConversationID] != nil {
			r.route(ctx, m, nil)
		}
	case addressed:
		r.route(ctx, m, ctx.Sender())
	}
}

// toOwner, in cluster mode, forwards what the conversation's owner must
// handle (posts, commands, deletes) to it, wherever it runs; attaches and
// detaches stay on this node, with its relay. It reports whether it took
// the message.
func (r *registry) toOwner(ctx actor.Context) bool {
	switch m := ctx.Message().(type) {
	case *attachConnection, *detachConnection:
		return false
	case addressed:
		r.sys.forward(ctx, m, ctx.Sender())
		return true
	}
	return false
}

// forget drops a running actor's reverse index entry. When none is left
// the map is replaced, since a Go map keeps its largest size: after a burst
// of actors that all passivated, their slots would stay allocated.
func (r *registry) forget(id string, ch *child) {
	if ch != nil {
		delete(r.byPID, ch.pid.Id)
		if len(r.byPID) == 0 {
			r.byPID = make(map[string]string)
		}
	}
}

// route sends m, with its sender, to the conversation's actor, spawning it
// if it is not running.
func (r *registry) route(ctx actor.Context, m addressed, sender *actor.PID) {
	id := m.conversationID()
	ch := r.convs[id]
	if ch == nil {
		props := actor.PropsFromProducer(func() actor.Actor { return newConversation(r.sys, id, local{}) }, r.sys.dispatched())
		if r.sys.placement != nil { // cluster mode: this node's relay; the conversation runs on its owner
			props = actor.PropsFromProducer(func() actor.Actor { return newRelay(r.sys, id) }, r.sys.dispatched())
		}
		pid := ctx.SpawnPrefix(props, "conversation-"+id)
		ch = &child{pid: pid}
		r.convs[id] = ch
		r.byPID[pid.Id] = id
	}
	ch.routed++
	ctx.Send(ch.pid, &routed{Msg: m, Sender: sender})
}

// startDelete removes the conversation from the store off the mailbox; the
// answer comes back as conversationRemoved.
func (r *registry) startDelete(ctx actor.Context, m *deleteConversation) {
	self, root, store, sender := ctx.Self(), ctx.ActorSystem().Root, r.sys.store, ctx.Sender()
	go func() {
		err := store.DeleteConversation(context.Background(), m.ConversationID)
		root.Send(self, &conversationRemoved{Request: m, Reply: sender, Err: err})
	}()
}

// deleted finishes a delete: the running actor, if any, closes its sockets
// with 4004 and answers, then stops; the registry forgets the conversation.
func (r *registry) deleted(ctx actor.Context, m *conversationRemoved) {
	id := m.Request.ConversationID
	if m.Err != nil {
		reply(ctx, m.Reply, &commandFailed{Err: m.Err})
		return
	}
	ch := r.convs[id]
	delete(r.convs, id)
	if ch == nil {
		reply(ctx, m.Reply, &conversationDeleted{})
		return
	}
	r.forget(id, ch)
	ctx.Send(ch.pid, &routed{Msg: m.Request, Sender: m.Reply})
	ctx.Poison(ch.pid)
}
