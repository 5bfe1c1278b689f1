// Package memstore is the in-memory core.Store: conversations and their event
// logs live in process memory and are lost on restart. It is the store for
// tests and for `storage.driver: memory`.
package memstore

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/agent-server/agent-server/core"
)

// Store is an in-memory core.Store, safe for concurrent use.
type Store struct {
	mu    sync.RWMutex
	convs map[string]*entry
}

type entry struct {
	conv   *core.Conversation
	events []*core.Event          // events[i].Seq == i+1
	byID   map[string]*core.Event // event ID -> event
	byKey  map[string]*core.Event // idempotency key -> newest event posted with it
}

// lookup returns conversation id's entry, or ErrNotFound; the caller holds
// s.mu.
func (s *Store) lookup(id string) (*entry, error) {
	e, ok := s.convs[id]
	if !ok {
		return nil, fmt.Errorf("conversation %s: %w", id, core.ErrNotFound)
	}
	return e, nil
}

// New returns an empty store.
func New() *Store { return &Store{convs: make(map[string]*entry)} }

// CreateConversation stores c unless its ID exists.
func (s *Store) CreateConversation(_ context.Context, c *core.Conversation) (*core.Conversation, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.convs[c.ID]; ok {
		return e.conv.Clone(), false, nil
	}
	s.convs[c.ID] = &entry{conv: c.Clone(), byID: make(map[string]*core.Event), byKey: make(map[string]*core.Event)}
	return c.Clone(), true, nil
}

// Conversation returns a copy of the conversation id.
func (s *Store) Conversation(_ context.Context, id string) (*core.Conversation, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	return e.conv.Clone(), nil
}

// Conversations returns copies of every conversation.
func (s *Store) Conversations(_ context.Context) ([]*core.Conversation, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*core.Conversation, 0, len(s.convs))
	for _, e := range s.convs {
		out = append(out, e.conv.Clone())
	}
	return out, nil
}

// UpdateConversation replaces the metadata of c.ID. The store has one
// owner, whose epoch is 0: any other is fenced.
func (s *Store) UpdateConversation(_ context.Context, c *core.Conversation, epoch uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.lookup(c.ID)
	if err != nil {
		return err
	}
	if epoch != 0 {
		return fmt.Errorf("update conversation %s: epoch %d: %w", c.ID, epoch, core.ErrFenced)
	}
	e.conv = c.Clone()
	return nil
}

// DeleteConversation removes a conversation and its events.
func (s *Store) DeleteConversation(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.lookup(id); err != nil {
		return err
	}
	delete(s.convs, id)
	return nil
}

// AppendEvents adds events whose Seq must continue the log.
func (s *Store) AppendEvents(_ context.Context, id string, events []*core.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appendLocked(id, events, 0)
}

// AppendBatch appends each element in order under one lock.
func (s *Store) AppendBatch(_ context.Context, batch []core.Append) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	errs := make([]error, len(batch))
	for i, a := range batch {
		errs[i] = s.appendLocked(a.ConversationID, a.Events, a.Epoch)
	}
	return errs
}

func (s *Store) appendLocked(id string, events []*core.Event, epoch uint64) error {
	e, err := s.lookup(id)
	if err != nil {
		return err
	}
	if epoch != 0 {
		return fmt.Errorf("conversation %s: epoch %d: %w", id, epoch, core.ErrFenced)
	}
	next := uint64(len(e.events)) + 1
	for i, ev := range events {
		if ev.Seq != next+uint64(i) {
			return fmt.Errorf("conversation %s: event seq %d, the log continues at %d: %w", id, ev.Seq, next+uint64(i), core.ErrSeqConflict)
		}
		if len(ev.IdempotencyKey) > core.MaxIdempotencyKey {
			return fmt.Errorf("conversation %s: event %s: idempotency key longer than %d bytes", id, ev.ID, core.MaxIdempotencyKey)
		}
		if _, dup := e.byID[ev.ID]; dup || slices.ContainsFunc(events[:i], func(x *core.Event) bool { return x.ID == ev.ID }) {
			return fmt.Errorf("conversation %s: event %s: %w", id, ev.ID, core.ErrDuplicateEventID)
		}
	}
	for _, ev := range events {
		e.events = append(e.events, ev)
		e.byID[ev.ID] = ev
		if ev.IdempotencyKey != "" {
			e.byKey[ev.IdempotencyKey] = ev
		}
	}
	if len(events) > 0 {
		conv := e.conv.Clone()
		conv.UpdatedAt = events[len(events)-1].Timestamp
		e.conv = conv
	}
	return nil
}

// Events returns up to limit events after afterSeq, oldest first. Events are
// immutable once appended, so the returned pointers are shared.
func (s *Store) Events(_ context.Context, id string, afterSeq uint64, limit int) ([]*core.Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	if afterSeq >= uint64(len(e.events)) {
		return nil, nil
	}
	tail := e.events[afterSeq:]
	if limit > 0 && len(tail) > limit {
		tail = tail[:limit]
	}
	return append([]*core.Event(nil), tail...), nil
}

// EventByID returns one event.
func (s *Store) EventByID(_ context.Context, id, eventID string) (*core.Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	ev, ok := e.byID[eventID]
	if !ok {
		return nil, fmt.Errorf("event %s: %w", eventID, core.ErrNotFound)
	}
	return ev, nil
}

// FirstSeqAtOrAfter binary-searches the log, whose timestamps never decrease.
func (s *Store) FirstSeqAtOrAfter(_ context.Context, id string, t time.Time) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.lookup(id)
	if err != nil {
		return 0, err
	}
	i := sort.Search(len(e.events), func(i int) bool { return !e.events[i].Timestamp.Before(t) })
	return uint64(i) + 1, nil
}

// LastSeq returns the newest event's Seq, 0 for an empty log.
func (s *Store) LastSeq(_ context.Context, id string) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.lookup(id)
	if err != nil {
		return 0, err
	}
	return uint64(len(e.events)), nil
}

// EventByKey returns the newest event appended with key.
func (s *Store) EventByKey(_ context.Context, id, key string) (*core.Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	ev, ok := e.byKey[key]
	if !ok {
		return nil, fmt.Errorf("idempotency key: %w", core.ErrNotFound)
	}
	return ev, nil
}

// SearchEvents filters and pages the log in memory.
func (s *Store) SearchEvents(_ context.Context, id string, q core.EventQuery) (core.Page[*core.Event], error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.lookup(id)
	if err != nil {
		return core.Page[*core.Event]{}, err
	}
	var cursor *core.Event
	if q.PageID != "" {
		var ok bool
		if cursor, ok = e.byID[q.PageID]; !ok {
			return core.Page[*core.Event]{}, fmt.Errorf("conversation %s: %w", id, core.ErrUnknownPageID)
		}
	}
	return core.SearchEvents(e.events, q.Filter, q.Order, cursor, q.Limit), nil
}

// CountEvents counts the log's events that pass f.
func (s *Store) CountEvents(_ context.Context, id string, f core.EventFilter) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.lookup(id)
	if err != nil {
		return 0, err
	}
	return core.CountEvents(e.events, f), nil
}

// ForkConversation stores fork with copies of the events from names.
func (s *Store) ForkConversation(_ context.Context, fork *core.Conversation, from core.ForkSource) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.convs[fork.ID]; ok {
		return fmt.Errorf("fork %s: %w", fork.ID, core.ErrConversationExists)
	}
	src, ok := s.convs[from.ConversationID]
	if !ok {
		return fmt.Errorf("fork %s from %s: %w", fork.ID, from.ConversationID, core.ErrNotFound)
	}
	seqs := from.Seqs
	if seqs == nil {
		for seq := uint64(1); seq <= from.Through; seq++ {
			seqs = append(seqs, seq)
		}
	}
	e := &entry{conv: fork.Clone(), byID: make(map[string]*core.Event, len(seqs)), byKey: make(map[string]*core.Event)}
	for i, seq := range seqs {
		if seq == 0 || seq > uint64(len(src.events)) || (i > 0 && seq <= seqs[i-1]) {
			return fmt.Errorf("fork %s from %s: event seq %d: %w", fork.ID, from.ConversationID, seq, core.ErrNotFound)
		}
		cp := *src.events[seq-1]
		cp.Seq, cp.IdempotencyKey = uint64(i+1), ""
		e.events = append(e.events, &cp)
		e.byID[cp.ID] = &cp
	}
	if n := len(e.events); n > 0 {
		e.conv.UpdatedAt = e.events[n-1].Timestamp
	}
	s.convs[fork.ID] = e
	return nil
}

var _ core.Store = (*Store)(nil)
