package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// registry addresses conversation actors by conversation ID. It spawns one,
// as its child, on the first message for a conversation that exists in the
// store, forwards every conversation-addressed message to it, and is where a
// conversation is deleted, so that spawn, routing and delete are serialized.
type registry struct {
	sys      *System
	children map[string]*actor.PID // conversation ID -> actor
}

func newRegistry(s *System) *registry {
	return &registry{sys: s, children: make(map[string]*actor.PID)}
}

// Receive handles the registry's messages.
func (r *registry) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *deleteConversation:
		r.delete(ctx, m)
	case *conversationEnded:
		if pid, ok := r.children[m.ConversationID]; ok && pid.Equal(m.PID) {
			delete(r.children, m.ConversationID)
			ctx.Poison(pid)
		}
	case *actor.Terminated:
		for id, pid := range r.children {
			if pid.Equal(m.Who) {
				delete(r.children, id)
				break
			}
		}
	case addressed:
		r.route(ctx, m)
	}
}

// route forwards m, keeping its sender, to the conversation's actor.
func (r *registry) route(ctx actor.Context, m addressed) {
	id := m.conversationID()
	pid, ok := r.children[id]
	if !ok {
		// The store is read here only on a conversation's first message;
		// it is in memory for now (see the package doc).
		if _, err := r.sys.store.Conversation(context.Background(), id); err != nil {
			refuse(ctx, m, fmt.Errorf("conversation %s: %w", id, err))
			return
		}
		pid = ctx.SpawnPrefix(actor.PropsFromProducer(func() actor.Actor { return newConversation(r.sys, id) }), "conversation-"+id)
		r.children[id] = pid
	}
	ctx.Forward(pid)
}

// delete removes the conversation from the store, then lets its actor close
// the sockets and answer. Messages forwarded before the delete are handled
// first; the poison pill stops the actor after the delete.
func (r *registry) delete(ctx actor.Context, m *deleteConversation) {
	if err := r.sys.store.DeleteConversation(context.Background(), m.ConversationID); err != nil {
		respond(ctx, &commandFailed{Err: err})
		return
	}
	pid, ok := r.children[m.ConversationID]
	if !ok {
		respond(ctx, &conversationDeleted{})
		return
	}
	delete(r.children, m.ConversationID)
	ctx.Forward(pid)
	ctx.Poison(pid)
}

// refuse answers a message whose conversation cannot be had: an attach is
// closed with 4004 (or 1011 when the store failed), an append fails.
func refuse(ctx actor.Context, m addressed, err error) {
	switch m := m.(type) {
	case *attachConnection:
		d := core.DisconnectNotFound
		if !errors.Is(err, core.ErrNotFound) {
			d = core.DisconnectInternalError
		}
		m.Transport.Close(d)
		ctx.Send(m.Conn, &closeConnection{Reason: d})
	default:
		respond(ctx, &commandFailed{Err: err})
	}
}

// respond answers the sender, if the message had one.
func respond(ctx actor.Context, msg any) {
	if ctx.Sender() != nil {
		ctx.Respond(msg)
	}
}
