package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/actors/clusterpb"
	"github.com/agent-server/agent-server/core"
)

// The conversation's event tree (core/tree.go) in its actor. The actor
// keeps two HEADs: head, after the last event it assigned a Seq (what the
// next event's parent_id is), and conv.Head, after the last durable one
// (what its state records and GET shows). enqueue stamps and moves the
// first, stored moves the second, a failed write brings the first back to
// the second, and navigate sets both. The HEAD moves with every append but
// is written to the store only with the rest of the state: an actor that
// loads derives it from the log's tail (withHead), which says what it was.
//
// A navigate waits until every event appended before it is durable, or
// failed (heldForNavigate), so that the Seq its Head records is the durable
// end of the log: a Head never counts events that a failed write leaves out
// and whose Seqs are assigned again. What comes after the navigate waits
// behind it, in order, so that it is stamped from the new HEAD.

// withHead returns conv with its Head brought up to the log's end at
// lastSeq. It runs off the mailbox, in the load.
func withHead(store core.Store, conv *core.Conversation, lastSeq uint64) (*core.Conversation, error) {
	h, err := core.ResolveHead(context.Background(), store, conv.ID, conv.Head, lastSeq)
	if err != nil {
		return nil, err
	}
	conv.Head = h // conv was just read from the store: the load's own
	return conv, nil
}

// headFailed follows a failed write of the log: the events after its
// durable end are not stored, so the HEAD is the durable one again (a
// navigate runs only with nothing pending, so conv.Head is durable).
func (c *conversation) headFailed() {
	c.head = c.conv.Head
}

// navigate moves the HEAD to m.EventID (none for ""): the next event
// starts a branch there. With appends pending it waits for them
// (heldForNavigate). The new HEAD is written with the state and sent to
// the runtime, whose next run starts from it; clients are not told, as
// upstream broadcasts no event for it. The System checked that the event
// exists.
func (c *conversation) navigate(ctx actor.Context, m *navigateConversation, sender *actor.PID) {
	if c.gone {
		c.reply(ctx, sender, &commandFailed{Err: c.goneErr})
		return
	}
	if len(c.pending) > 0 {
		c.held = append(c.held, stashed{m, sender})
		return
	}
	h := core.Head{LeafEventID: m.EventID, Empty: m.EventID == "", Seq: c.lastSeq} // == c.durable
	c.head = h
	next := c.conv.Clone()
	next.Head = h
	c.change(ctx, next, nil, &afterState{reply: sender, msg: &commandDone{}})
	c.sendState()
}

// heldForNavigate keeps msg behind a navigate that waits for the appends
// before it, and reports whether it did. What completes the actor's own
// work goes through: the writer's reports (which end the wait), the
// state's, a key's lookup (for a post that came before the navigate), and
// replay reads. So does a delete, which waits for no append: on a single
// node the registry has deleted from the store already (deleteConversation);
// in cluster mode the owner deletes (Delete) and is told it is done
// (ownerDeleted), and only then closes every node's sockets and answers.
func (c *conversation) heldForNavigate(msg any, sender *actor.PID) bool {
	if len(c.held) == 0 {
		return false
	}
	switch msg.(type) {
	case *eventsStored, *stateStored, *keyResolved, *replayResolved, *replayRead, *resumeReplay,
		*deleteConversation, *clusterpb.Delete, *ownerDeleted:
		return false
	}
	c.held = append(c.held, stashed{msg, sender})
	return true
}

// navigateReady handles a held navigate, and what came after it, once the
// appends before it are durable or failed, or the conversation is gone
// (each is then refused). A later navigate that finds appends pending
// again holds what follows it in turn. handle calls it after every
// message.
func (c *conversation) navigateReady(ctx actor.Context) {
	if len(c.held) == 0 || (len(c.pending) > 0 && !c.gone) {
		return
	}
	held := c.held
	c.held = nil
	for _, s := range held {
		c.handle(ctx, s.msg, s.sender)
	}
}

// failHeld answers, as the actor stops, what waited behind a navigate: a
// request that came over the wire in the wire's terms.
func (c *conversation) failHeld(ctx actor.Context) {
	for _, s := range c.held {
		msg, wire := s.msg, false
		if m, ok := fromRemote(c.id, msg); ok {
			msg, wire = m, true
		}
		var answer any
		switch m := msg.(type) {
		case *attachConnection:
			m.Transport.Close(core.DisconnectInternalError)
			ctx.Send(m.Conn, &closeConnection{Reason: core.DisconnectInternalError})
			continue
		case *publishEvent:
			answer = &publishFailed{Ref: m.Ref, Err: errStoppedUnconfirmed}
		case addressed:
			answer = &commandFailed{Err: errStoppedUnconfirmed}
		default:
			continue
		}
		if wire {
			reply(ctx, s.sender, resultOf(answer))
		} else {
			c.reply(ctx, s.sender, answer)
		}
	}
	c.held = nil
}

// Navigate moves the conversation's HEAD to eventID, or empties it for ""
// (upstream's navigate to null), and returns once that is durable. An
// unknown conversation is core.ErrNotFound, an event not in it a
// *core.UnknownEventError.
func (s *System) Navigate(ctx context.Context, id, eventID string) error {
	if eventID != "" {
		if _, err := s.store.EventByID(ctx, id, eventID); err != nil {
			if !errors.Is(err, core.ErrNotFound) {
				return fmt.Errorf("navigate %s: %w", id, err)
			}
			if _, err := s.store.Conversation(ctx, id); err != nil {
				return fmt.Errorf("navigate %s: %w", id, err)
			}
			return &core.UnknownEventError{Field: "event_id", EventID: eventID}
		}
	}
	return s.command(ctx, id, "navigate", &navigateConversation{ConversationID: id, EventID: eventID}, requestTimeout)
}
