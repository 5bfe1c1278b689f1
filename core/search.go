package core

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Paging bounds of the search endpoints, as OpenHands sets them.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 100
)

// SortOrder is the sort_order of a search.
type SortOrder string

// The sort orders: TIMESTAMP* for events, CREATED_AT* and UPDATED_AT* for
// conversations. Ties are broken by log position (events) or ID
// (conversations), so every order is total and paging is deterministic.
const (
	SortTimestamp     SortOrder = "TIMESTAMP"
	SortTimestampDesc SortOrder = "TIMESTAMP_DESC"
	SortCreatedAt     SortOrder = "CREATED_AT"
	SortCreatedAtDesc SortOrder = "CREATED_AT_DESC"
	SortUpdatedAt     SortOrder = "UPDATED_AT"
	SortUpdatedAtDesc SortOrder = "UPDATED_AT_DESC"
)

// ParseEventOrder reads an event search's sort_order, case-insensitively.
// Empty means TIMESTAMP.
func ParseEventOrder(s string) (SortOrder, error) {
	return parseOrder(s, SortTimestamp, SortTimestamp, SortTimestampDesc)
}

// ParseConversationOrder reads a conversation search's sort_order,
// case-insensitively. Empty means CREATED_AT.
func ParseConversationOrder(s string) (SortOrder, error) {
	return parseOrder(s, SortCreatedAt, SortCreatedAt, SortCreatedAtDesc, SortUpdatedAt, SortUpdatedAtDesc)
}

func parseOrder(s string, def SortOrder, valid ...SortOrder) (SortOrder, error) {
	if s == "" {
		return def, nil
	}
	for _, o := range valid {
		if strings.EqualFold(s, string(o)) {
			return o, nil
		}
	}
	names := make([]string, len(valid))
	for i, o := range valid {
		names[i] = string(o)
	}
	return "", fmt.Errorf("sort_order must be one of %s", strings.Join(names, ", "))
}

// ParseLimit reads a search's limit: empty means DefaultPageLimit, anything
// else must be an integer from 1 to MaxPageLimit.
func ParseLimit(s string) (int, error) {
	if s == "" {
		return DefaultPageLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxPageLimit {
		return 0, fmt.Errorf("limit must be an integer from 1 to %d", MaxPageLimit)
	}
	return n, nil
}

// ParseStatus reads an execution_status filter value.
func ParseStatus(s string) (ExecutionStatus, error) {
	switch st := ExecutionStatus(strings.ToLower(s)); st {
	case StatusIdle, StatusRunning, StatusPaused, StatusWaiting, StatusFinished,
		StatusError, StatusStuck, StatusDeleting:
		return st, nil
	}
	return "", fmt.Errorf("execution_status must be one of idle, running, paused, waiting_for_confirmation, finished, error, stuck, deleting")
}

// EventFilter selects the events an event search or count returns. Zero
// fields do not filter.
type EventFilter struct {
	Kind   string    // exact event class name, e.g. "MessageEvent"
	Source Source    // exact source
	Since  time.Time // timestamp__gte: keep events with Timestamp >= Since
	Before time.Time // timestamp__lt: keep events with Timestamp < Before
}

// Match reports whether e passes the filter.
func (f EventFilter) Match(e *Event) bool {
	switch {
	case f.Kind != "" && e.Kind != f.Kind:
		return false
	case f.Source != "" && e.Source != f.Source:
		return false
	case !f.Since.IsZero() && e.Timestamp.Before(f.Since):
		return false
	case !f.Before.IsZero() && !e.Timestamp.Before(f.Before):
		return false
	}
	return true
}

// ConversationFilter selects the conversations a conversation search or
// count returns. Zero fields do not filter.
type ConversationFilter struct {
	Status ExecutionStatus      // exact execution_status
	Allow  func(id string) bool // e.g. Principal.CanAccess; nil allows all
}

// Match reports whether c passes the filter.
func (f ConversationFilter) Match(c *Conversation) bool {
	if f.Status != "" && c.ExecutionStatus != f.Status {
		return false
	}
	return f.Allow == nil || f.Allow(c.ID)
}

// EventQuery is one page of an event search.
type EventQuery struct {
	Filter EventFilter
	Order  SortOrder // SortTimestamp (default) or SortTimestampDesc
	// PageID, when set, is the ID of the event the page starts at (a
	// previous page's NextPageID): the page starts at the first event
	// Order does not place before it, so a page never skips or repeats an
	// event even when that event does not pass Filter. "" starts at the
	// beginning.
	PageID string
	Limit  int // at most this many items; < 1 means DefaultPageLimit
}

// Page is one page of a search.
type Page[T any] struct {
	Items []T
	// NextPageID is the ID of the first item of the next page, which that
	// page includes; "" when this is the last page.
	NextPageID string
}

// SearchEvents filters events, sorts them by order (TIMESTAMP or
// TIMESTAMP_DESC) and returns the page of at most limit items that starts at
// cursor, the event next_page_id named, or at the beginning when cursor is
// nil. events is not modified.
func SearchEvents(events []*Event, f EventFilter, order SortOrder, cursor *Event, limit int) Page[*Event] {
	kept := make([]*Event, 0, len(events))
	for _, e := range events {
		if f.Match(e) {
			kept = append(kept, e)
		}
	}
	cmp := EventOrder(order)
	if !slices.IsSortedFunc(kept, cmp) { // a log is usually already in order
		slices.SortFunc(kept, cmp)
	}
	return paginate(kept, cmp, cursor, cursor != nil, limit, func(e *Event) string { return e.ID })
}

// CountEvents returns how many events pass f.
func CountEvents(events []*Event, f EventFilter) int {
	n := 0
	for _, e := range events {
		if f.Match(e) {
			n++
		}
	}
	return n
}

// SearchConversations filters convs, sorts them by order and returns the
// page of at most limit items that starts at cursor, the conversation
// next_page_id named, or at the beginning when cursor is nil. convs is not
// modified.
func SearchConversations(convs []*Conversation, f ConversationFilter, order SortOrder, cursor *Conversation, limit int) Page[*Conversation] {
	kept := make([]*Conversation, 0, len(convs))
	for _, c := range convs {
		if f.Match(c) {
			kept = append(kept, c)
		}
	}
	cmp := ConversationOrder(order)
	slices.SortFunc(kept, cmp)
	return paginate(kept, cmp, cursor, cursor != nil, limit, func(c *Conversation) string { return c.ID })
}

// CountConversations returns how many conversations pass f.
func CountConversations(convs []*Conversation, f ConversationFilter) int {
	n := 0
	for _, c := range convs {
		if f.Match(c) {
			n++
		}
	}
	return n
}

// EventOrder returns the comparison that sorts events by order: by
// timestamp, then by position in the log. An unknown order sorts as
// TIMESTAMP.
func EventOrder(order SortOrder) func(a, b *Event) int {
	asc := func(a, b *Event) int {
		if c := a.Timestamp.Compare(b.Timestamp); c != 0 {
			return c
		}
		return cmp.Compare(a.Seq, b.Seq)
	}
	if order == SortTimestampDesc {
		return func(a, b *Event) int { return asc(b, a) }
	}
	return asc
}

// ConversationOrder returns the comparison that sorts conversations by
// order: by created_at or updated_at, then by ID. An unknown order sorts as
// CREATED_AT.
func ConversationOrder(order SortOrder) func(a, b *Conversation) int {
	key := func(c *Conversation) time.Time { return c.CreatedAt }
	if order == SortUpdatedAt || order == SortUpdatedAtDesc {
		key = func(c *Conversation) time.Time { return c.UpdatedAt }
	}
	asc := func(a, b *Conversation) int {
		if c := key(a).Compare(key(b)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	}
	if order == SortCreatedAtDesc || order == SortUpdatedAtDesc {
		return func(a, b *Conversation) int { return asc(b, a) }
	}
	return asc
}

// paginate cuts one page out of sorted, which cmp orders. Without a cursor
// the page starts at the beginning; with one it starts at the first item cmp
// does not order before cursor: the cursor itself if it is
// in sorted, else the item that would follow it. So a page_id never skips or
// repeats an item, even when the cursor item is filtered out of this search.
func paginate[T any](sorted []T, cmp func(a, b T) int, cursor T, hasCursor bool, limit int, id func(T) string) Page[T] {
	start := 0
	if hasCursor {
		start, _ = slices.BinarySearchFunc(sorted, cursor, cmp)
	}
	if limit < 1 {
		limit = DefaultPageLimit
	}
	rest := sorted[start:]
	if len(rest) <= limit {
		return Page[T]{Items: rest}
	}
	return Page[T]{Items: rest[:limit], NextPageID: id(rest[limit])}
}

// SeqWindow turns an event search into the part of a log it reads, for a
// store whose log is ordered by Seq. Because timestamps never decrease
// along a log, time order is Seq order, and a time bound is a Seq bound:
// since and before are the Seqs of the first events at or after
// Filter.Since and Filter.Before (0 when that bound is not set), cursor is
// the Seq of the event PageID names (0 without one), last the log's last
// Seq. The page's events are those passing the kind and source filters in
// Seq [from, to), taken upward from from, or downward from to-1 when desc.
func SeqWindow(last, since, before, cursor uint64, desc bool) (from, to uint64) {
	from, to = 1, last+1
	if since > from {
		from = since
	}
	if before > 0 && before < to {
		to = before
	}
	if cursor > 0 {
		if desc {
			to = min(to, cursor+1)
		} else {
			from = max(from, cursor)
		}
	}
	if to < from {
		to = from
	}
	return from, to
}
