package core

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by a Store for an unknown conversation or event.
var ErrNotFound = errors.New("not found")

// Store keeps conversations and their event logs. The in-memory store is in
// package memstore, the durable embedded one in package boltstore.
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

	// AppendEvents adds sealed events, whose Seq continue the log, in order,
	// and sets the conversation's UpdatedAt to the last event's Timestamp.
	// When it returns nil the events are durable (as durable as the store).
	AppendEvents(ctx context.Context, conversationID string, events []*Event) error
	// AppendBatch does what AppendEvents does for each element, in order,
	// all in one write (one transaction and one sync for a durable store).
	// It returns one error per element, nil for the stored ones: an element
	// that fails (unknown conversation, a Seq that does not continue the
	// log) stores nothing and does not stop the others.
	AppendBatch(ctx context.Context, batch []Append) []error
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

// Append is one conversation's share of a Store.AppendBatch.
type Append struct {
	ConversationID string
	Events         []*Event
}
