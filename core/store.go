package core

import (
	"context"
	"errors"
	"time"
)

// Errors a Store returns, wrapped with context; test them with errors.Is.
var (
	// ErrNotFound is an unknown conversation or event.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable is a store that cannot be reached now (its database
	// is down or still starting): nothing was done, and the same call may
	// succeed later.
	ErrUnavailable = errors.New("store unavailable")
	// ErrFenced is an append whose ownership epoch is no longer the
	// conversation's: another activation owns the log now.
	ErrFenced = errors.New("conversation is owned by a newer activation")
	// ErrUnknownPageID is a search whose page ID names no event of the
	// conversation.
	ErrUnknownPageID = errors.New("page_id does not name an event of this conversation")
	// ErrDuplicateEventID is an append of an event whose ID is stored
	// already.
	ErrDuplicateEventID = errors.New("an event with this ID is stored already")
	// ErrSeqConflict is an append whose first Seq does not continue the
	// log: the appender's idea of where the log ends is stale.
	ErrSeqConflict = errors.New("event seq does not continue the log")
	// ErrKeyReused is a post whose idempotency key an earlier post of the
	// conversation used with another body: REST answers 422.
	ErrKeyReused = errors.New("the idempotency key was used with another request")
	// ErrConversationExists is a fork whose ID names a stored
	// conversation.
	ErrConversationExists = errors.New("a conversation with this ID exists")
)

// Store keeps conversations and their event logs. The in-memory store is in
// package memstore, the durable embedded one in package boltstore.
//
// Writes to one conversation's log come only from that conversation's actor,
// so AppendEvents never races with itself for the same conversation. Reads
// may come from anywhere at any time. Implementations must be safe for
// concurrent use and must not keep references to caller-owned slices.
//
// An event ID is unique within its conversation's log. Several
// conversations may hold the same ID: a fork copies its source's events
// with their IDs.
type Store interface {
	// CreateConversation stores c unless its ID exists. It reports whether it
	// created it, and returns the stored conversation either way.
	CreateConversation(ctx context.Context, c *Conversation) (stored *Conversation, created bool, err error)
	// Conversation returns a copy of the conversation, or ErrNotFound.
	Conversation(ctx context.Context, id string) (*Conversation, error)
	// Conversations returns copies of every conversation, in no set order.
	Conversations(ctx context.Context) ([]*Conversation, error)
	// UpdateConversation replaces the stored metadata of c.ID, or
	// ErrNotFound. With an epoch other than 0 (a cluster activation's, see
	// Fencer) it is refused with ErrFenced unless that is the
	// conversation's current epoch, as a stale activation's appends are;
	// epoch 0 (a single node, a tool) replaces it whatever the epoch.
	UpdateConversation(ctx context.Context, c *Conversation, epoch uint64) error
	// DeleteConversation removes a conversation and all its events, or ErrNotFound.
	DeleteConversation(ctx context.Context, id string) error

	// AppendEvents adds sealed events, whose Seq continue the log, in order,
	// and sets the conversation's UpdatedAt to the last event's Timestamp.
	// When it returns nil the events are durable (as durable as the store).
	AppendEvents(ctx context.Context, conversationID string, events []*Event) error
	// AppendBatch does what AppendEvents does for each element, in order,
	// all in one write (one transaction and one sync for a durable store).
	// It returns one error per element, nil for the stored ones: an element
	// that is refused (unknown conversation, a Seq that does not continue
	// the log, an event ID stored already, a stale Epoch) stores nothing and
	// does not stop the others. When the write itself fails, every element
	// gets the error, and nothing of the batch is stored: a durable store
	// never reports an element failed that it stored, nor stored one it
	// reports failed.
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
	// SearchEvents returns one page of the events that pass q.Filter, in
	// q.Order, from the store's indexes (not by loading the log). See
	// EventQuery for paging; an unknown q.PageID is ErrUnknownPageID.
	SearchEvents(ctx context.Context, conversationID string, q EventQuery) (Page[*Event], error)
	// CountEvents returns how many events pass f.
	CountEvents(ctx context.Context, conversationID string, f EventFilter) (int, error)
	// EventByKey returns the newest event of the conversation that was
	// appended with this idempotency key, or ErrNotFound.
	EventByKey(ctx context.Context, conversationID, key string) (*Event, error)
	// ForkConversation stores fork, a new conversation, with copies of the
	// events from names, all in one write: either all of it is stored or
	// nothing is. The copies keep their ID, Timestamp, Source, Kind and
	// Raw, are numbered from Seq 1 in their order, and lose their
	// idempotency keys (a retry of a post to the source is no post to the
	// fork); fork's UpdatedAt becomes the last copy's Timestamp, as if
	// appended. It fails with ErrConversationExists when fork.ID is taken,
	// and with ErrNotFound when the source does not exist or lacks an
	// event named.
	ForkConversation(ctx context.Context, fork *Conversation, from ForkSource) error
}

// ForkSource names the events a fork copies: with Seqs nil, those of the
// conversation with Seq <= Through (none when Through is 0); else exactly
// Seqs, which ascend.
type ForkSource struct {
	ConversationID string
	Through        uint64
	Seqs           []uint64
}

// Len is how many events the fork copies.
func (f ForkSource) Len() int {
	if f.Seqs != nil {
		return len(f.Seqs)
	}
	return int(f.Through)
}

// Fencer is a store that can fence a conversation's log: cluster mode
// needs one, so that two activations of one conversation (membership views
// can briefly differ) never both append.
type Fencer interface {
	// Acquire takes a new ownership epoch for the conversation: from then
	// on, appends carrying an older epoch are refused with ErrFenced. It
	// returns the epoch and the log's last Seq at that moment, or
	// ErrNotFound.
	Acquire(ctx context.Context, conversationID string) (epoch, lastSeq uint64, err error)
	// Epoch returns the conversation's current ownership epoch, or
	// ErrNotFound: an activation whose epoch is older has been fenced.
	Epoch(ctx context.Context, conversationID string) (uint64, error)
}

// Append is one conversation's share of a Store.AppendBatch.
type Append struct {
	ConversationID string
	Events         []*Event
	// Epoch is the ownership epoch of the activation appending: the append
	// is refused with ErrFenced unless it is the conversation's current one.
	// A conversation starts at epoch 0, where a single node leaves it.
	Epoch uint64
}
