package core

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by a Store for an unknown conversation or event.
var ErrNotFound = errors.New("not found")

// Store keeps conversations and their event logs. The in-memory store is in
// package memstore; a durable one implements the same contract.
//
// Writes to one conversation's log come only from that conversation's actor,
// so AppendEvents never races with itself for the same conversation. Reads
// may come from anywhere at any time. Implementations must be safe for
// concurrent use and must not keep references to caller-owned slices.
type Store interface {
	// CreateConversation stores c unless its ID exists. It reports whether it
	// created it, and returns the stored conversation either way.
	CreateConversation(ctx context.Context, c *Conversation) (stored *Conversation, created bool, err error)
	// Conversation returns a copy of the conversation, or ErrNotFound.
	Conversation(ctx context.Context, id string) (*Conversation, error)
	// Conversations returns copies of every conversation, in no set order.
	Conversations(ctx context.Context) ([]*Conversation, error)
	// UpdateConversation replaces the stored metadata of c.ID, or ErrNotFound.
	UpdateConversation(ctx context.Context, c *Conversation) error
	// DeleteConversation removes a conversation and all its events, or ErrNotFound.
	DeleteConversation(ctx context.Context, id string) error

	// AppendEvents adds sealed events, whose Seq continue the log, in order.
	AppendEvents(ctx context.Context, conversationID string, events []*Event) error
	// Events returns up to limit events with Seq > afterSeq, oldest first.
	// limit <= 0 means no limit.
	Events(ctx context.Context, conversationID string, afterSeq uint64, limit int) ([]*Event, error)
	// EventByID returns one event, or ErrNotFound.
	EventByID(ctx context.Context, conversationID, eventID string) (*Event, error)
	// FirstSeqAtOrAfter returns the Seq of the first event with
	// Timestamp >= t, or LastSeq+1 when there is none.
	FirstSeqAtOrAfter(ctx context.Context, conversationID string, t time.Time) (uint64, error)
	// LastSeq returns the Seq of the newest event, 0 for an empty log.
	LastSeq(ctx context.Context, conversationID string) (uint64, error)
}
