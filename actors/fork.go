package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agent-server/agent-server/core"
)

// ForkConversation forks the conversation sourceID (upstream's POST
// /api/conversations/{id}/fork): a new conversation, core.NewFork of the
// source, with copies of the source's events (all of them, or the branch
// that ends at req.FromEventID) under their IDs, stored whole by one
// core.Store.ForkConversation, or not at all. It returns the fork as
// stored.
//
// It runs in the caller's goroutine against the store, like
// CreateConversation: the source's actor is not involved, so a big fork
// never holds up the source's appends (which go on meanwhile; the fork
// copies the log as it is when the fork reads where it ends), and in
// cluster mode any node forks, the fork's actor starting on its owner at
// first use. A fork of more than conversations.max_fork_events events, or
// of a branch whose root lies more than core.BranchReach times that many
// events before req.FromEventID (so that no request reads more of the log),
// is a *core.ForkTooLargeError, an unknown source core.ErrNotFound, an unknown
// req.FromEventID a *core.UnknownEventError, a taken req.ID
// core.ErrConversationExists.
func (s *System) ForkConversation(ctx context.Context, sourceID string, req core.ForkRequest) (*core.Conversation, error) {
	if s.closing.Load() {
		return nil, ErrShutdown
	}
	id := req.ID
	if id == "" {
		id = core.NewID()
	}
	fail := func(err error) error { return fmt.Errorf("fork %s into %s: %w", sourceID, id, err) }
	src, err := s.store.Conversation(ctx, sourceID)
	if err != nil {
		return nil, fail(err)
	}
	limit := s.conversations.MaxForkEvents
	from := core.ForkSource{ConversationID: sourceID}
	var head core.Head
	if req.FromEventID != "" {
		leaf, err := s.store.EventByID(ctx, sourceID, req.FromEventID)
		if errors.Is(err, core.ErrNotFound) {
			return nil, &core.UnknownEventError{Field: "from_event_id", EventID: req.FromEventID}
		}
		if err != nil {
			return nil, fail(err)
		}
		if from.Seqs, err = core.Branch(ctx, s.store, sourceID, leaf, limit); errors.Is(err, core.ErrBranchTooLong) {
			return nil, &core.ForkTooLargeError{Max: limit}
		} else if err != nil {
			return nil, fail(err)
		}
		head = core.Head{LeafEventID: leaf.ID, Seq: uint64(len(from.Seqs))}
	} else {
		if from.Through, err = s.store.LastSeq(ctx, sourceID); err != nil {
			return nil, fail(err)
		}
		if limit > 0 && from.Through > uint64(limit) {
			return nil, &core.ForkTooLargeError{Events: int(from.Through), Max: limit}
		}
		// The whole log keeps its Seq, so the source's HEAD is the fork's.
		if head, err = core.ResolveHead(ctx, s.store, sourceID, src.Head, from.Through); err != nil {
			return nil, fail(err)
		}
	}
	fork := core.NewFork(src, id, req, head, time.Now().UTC().Truncate(time.Microsecond))
	if err := s.store.ForkConversation(ctx, fork, from); err != nil {
		return nil, fail(err)
	}
	stored, err := s.store.Conversation(ctx, id)
	if err != nil {
		return nil, fail(err)
	}
	s.log.Info("conversation forked", "source", sourceID, "fork", id, "events", from.Len(), "from_event_id", req.FromEventID)
	return stored, nil
}
