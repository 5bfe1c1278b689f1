package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

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
// durable end are not stored, so the HEAD is the durable one again. A
// navigate recorded among the lost events still holds (its event was
// stored), from the durable end.
func (c *conversation) headFailed() {
	if c.conv.Head.Seq > c.durable {
		conv := c.conv.Clone()
		conv.Head.Seq = c.durable
		c.conv, c.state = conv, nil
	}
	c.head = c.conv.Head
}

// navigate moves the HEAD to m.EventID (none for ""): the next event
// starts a branch there. The new HEAD is written with the state and sent
// to the runtime, whose next run starts from it; clients are not told, as
// upstream broadcasts no event for it. The System checked that the event
// exists.
func (c *conversation) navigate(ctx actor.Context, m *navigateConversation, sender *actor.PID) {
	if c.gone {
		c.reply(ctx, sender, &commandFailed{Err: c.goneErr})
		return
	}
	h := core.Head{LeafEventID: m.EventID, Empty: m.EventID == "", Seq: c.lastSeq}
	c.head = h
	next := c.conv.Clone()
	next.Head = h
	c.change(ctx, next, nil, &afterState{reply: sender, msg: &commandDone{}})
	c.sendState()
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
