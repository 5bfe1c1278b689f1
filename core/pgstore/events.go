package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/agent-server/agent-server/core"
)

const (
	eventColumns = `seq, id, ts, source, kind, raw, idempotency_key`
	// Seq is gap-free, so a page of a log is a bounded Seq range: the
	// upper bound keeps the plan an index range scan of the page's rows
	// even while the table's statistics are stale (after a burst of
	// appends, before autovacuum analyzes it), when the planner would
	// otherwise sort every later row to take the first few.
	sqlEvents = `SELECT ` + eventColumns + ` FROM events
WHERE conversation_id = $1 AND seq > $2 AND ($3::bigint IS NULL OR seq <= $2 + $3) ORDER BY seq LIMIT $3`
	sqlEventByID  = `SELECT ` + eventColumns + ` FROM events WHERE id = $1 AND conversation_id = $2`
	sqlEventByKey = `SELECT ` + eventColumns + ` FROM events
WHERE conversation_id = $1 AND idempotency_key = $2 ORDER BY seq DESC LIMIT 1`
	sqlLastSeq = `SELECT last_seq FROM conversations WHERE id = $1`
	// Everything a search needs to know where its page lies, in one round
	// trip: the log's end, the Seqs the time bounds map to, and the page
	// ID's Seq.
	sqlWindow = `SELECT c.last_seq, ` + firstAtOrAfterSince + `, ` + firstAtOrAfterBefore + `,
  (SELECT seq FROM events WHERE id = $4 AND conversation_id = c.id)
FROM conversations c WHERE c.id = $1`
	// The Seq of the first event at or after a time, from events_ts; NULL
	// when there is none (or when the time is NULL).
	firstAtOrAfterSince  = `(SELECT seq FROM events WHERE conversation_id = c.id AND ts >= $2 ORDER BY ts, seq LIMIT 1)`
	firstAtOrAfterBefore = `(SELECT seq FROM events WHERE conversation_id = c.id AND ts >= $3 ORDER BY ts, seq LIMIT 1)`
)

// Events returns up to limit events with Seq > afterSeq, oldest first.
func (s *Store) Events(ctx context.Context, id string, afterSeq uint64, limit int) ([]*core.Event, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("events of conversation %s: %w", id, err)
	}
	u, ok := parseUUID(id)
	if !ok {
		return nil, fmt.Errorf("events of conversation %s: %w", id, core.ErrNotFound)
	}
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	out, err := s.queryEvents(ctx, sqlEvents, u, int64(afterSeq), lim)
	if err == nil && len(out) == 0 {
		err = s.exists(ctx, u)
	}
	if err != nil {
		return nil, fmt.Errorf("events of conversation %s after %d: %w", id, afterSeq, err)
	}
	return out, nil
}

// EventByID returns one event of the conversation.
func (s *Store) EventByID(ctx context.Context, id, eventID string) (*core.Event, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("event %s of conversation %s: %w", eventID, id, err)
	}
	u, ok := parseUUID(id)
	e, eok := parseUUID(eventID)
	if !ok || !eok {
		return nil, fmt.Errorf("event %s of conversation %s: %w", eventID, id, core.ErrNotFound)
	}
	out, err := s.queryEvents(ctx, sqlEventByID, e, u)
	if err != nil {
		return nil, fmt.Errorf("event %s of conversation %s: %w", eventID, id, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("event %s of conversation %s: %w", eventID, id, core.ErrNotFound)
	}
	return out[0], nil
}

// EventByKey returns the newest event appended with key.
func (s *Store) EventByKey(ctx context.Context, id, key string) (*core.Event, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("event with idempotency key of conversation %s: %w", id, err)
	}
	u, ok := parseUUID(id)
	if !ok {
		return nil, fmt.Errorf("event with idempotency key of conversation %s: %w", id, core.ErrNotFound)
	}
	out, err := s.queryEvents(ctx, sqlEventByKey, u, key)
	if err == nil && len(out) == 0 {
		if err = s.exists(ctx, u); err == nil {
			err = core.ErrNotFound
		}
	}
	if err != nil {
		return nil, fmt.Errorf("event with idempotency key of conversation %s: %w", id, err)
	}
	return out[0], nil
}

// FirstSeqAtOrAfter returns the Seq of the first event at or after t, from
// the events_ts index, or LastSeq+1.
func (s *Store) FirstSeqAtOrAfter(ctx context.Context, id string, t time.Time) (uint64, error) {
	w, err := s.window(ctx, id, t, time.Time{}, "")
	if err != nil {
		return 0, fmt.Errorf("events of conversation %s since %s: %w", id, t.UTC().Format(core.TimestampLayout), err)
	}
	return w.since, nil
}

// LastSeq returns the newest event's Seq, 0 for an empty log.
func (s *Store) LastSeq(ctx context.Context, id string) (uint64, error) {
	if err := s.check(); err != nil {
		return 0, fmt.Errorf("last event of conversation %s: %w", id, err)
	}
	u, ok := parseUUID(id)
	if !ok {
		return 0, fmt.Errorf("last event of conversation %s: %w", id, core.ErrNotFound)
	}
	var seq int64
	err := s.pool.QueryRow(ctx, sqlLastSeq, u).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("last event of conversation %s: %w", id, core.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("last event of conversation %s: %w", id, classify(err))
	}
	return uint64(seq), nil
}

// SearchEvents reads one page from the Seq window of the query (see
// core.SeqWindow): one round trip finds the window, a second reads the
// page's rows, by kind from events_kind when the query names one.
func (s *Store) SearchEvents(ctx context.Context, id string, q core.EventQuery) (core.Page[*core.Event], error) {
	desc := q.Order == core.SortTimestampDesc
	w, err := s.window(ctx, id, q.Filter.Since, q.Filter.Before, q.PageID)
	if err != nil {
		return core.Page[*core.Event]{}, fmt.Errorf("search events of conversation %s: %w", id, err)
	}
	from, to := core.SeqWindow(w.last, w.since, w.before, w.cursor, desc)
	limit := q.Limit
	if limit < 1 {
		limit = core.DefaultPageLimit
	}
	var page core.Page[*core.Event]
	if from >= to {
		return page, nil
	}
	if q.Filter.Kind == "" && q.Filter.Source == "" {
		// Every Seq of the window is an event of the page: narrow the
		// range to the page (and the next one's first), so that the plan
		// reads only those rows whatever the statistics say.
		if desc {
			from = max(from, to-min(to, uint64(limit)+1))
		} else {
			to = min(to, from+uint64(limit)+1)
		}
	}
	sql, args := rangeQuery(`SELECT `+eventColumns, w.id, from, to, q.Filter)
	if desc {
		sql += ` ORDER BY seq DESC`
	} else {
		sql += ` ORDER BY seq`
	}
	sql += fmt.Sprintf(` LIMIT %d`, limit+1)
	items, err := s.queryEvents(ctx, sql, args...)
	if err != nil {
		return page, fmt.Errorf("search events of conversation %s: %w", id, err)
	}
	if len(items) > limit {
		page.NextPageID = items[limit].ID
		items = items[:limit]
	}
	page.Items = items
	return page, nil
}

// CountEvents counts the events passing f: the size of the window when f
// has no kind or source, else a count over the window.
func (s *Store) CountEvents(ctx context.Context, id string, f core.EventFilter) (int, error) {
	w, err := s.window(ctx, id, f.Since, f.Before, "")
	if err != nil {
		return 0, fmt.Errorf("count events of conversation %s: %w", id, err)
	}
	from, to := core.SeqWindow(w.last, w.since, w.before, 0, false)
	if f.Kind == "" && f.Source == "" || from >= to {
		return int(to - from), nil
	}
	sql, args := rangeQuery(`SELECT count(*)`, w.id, from, to, f)
	var n int64
	if err := s.pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count events of conversation %s: %w", id, classify(err))
	}
	return int(n), nil
}

// rangeQuery builds "<what> FROM events WHERE ..." over Seq [from, to),
// with f's kind and source.
func rangeQuery(what string, id [16]byte, from, to uint64, f core.EventFilter) (string, []any) {
	var b strings.Builder
	b.WriteString(what)
	b.WriteString(` FROM events WHERE conversation_id = $1 AND seq >= $2 AND seq < $3`)
	args := []any{id, int64(from), int64(to)}
	if f.Kind != "" {
		args = append(args, f.Kind)
		fmt.Fprintf(&b, ` AND kind = $%d`, len(args))
	}
	if f.Source != "" {
		args = append(args, string(f.Source))
		fmt.Fprintf(&b, ` AND source = $%d`, len(args))
	}
	return b.String(), args
}

// window is where a search's page lies in a log: core.SeqWindow's inputs.
type window struct {
	id                          [16]byte
	last, since, before, cursor uint64
}

// window reads the log's last Seq, the Seqs of the first events at or
// after since and before (0 for a zero time: no bound), and pageID's Seq
// (0 for ""), in one round trip.
func (s *Store) window(ctx context.Context, id string, since, before time.Time, pageID string) (window, error) {
	if err := s.check(); err != nil {
		return window{}, err
	}
	var w window
	var ok bool
	if w.id, ok = parseUUID(id); !ok {
		return window{}, core.ErrNotFound
	}
	var cursorArg any
	if pageID != "" {
		c, ok := parseUUID(pageID)
		if !ok {
			return window{}, core.ErrUnknownPageID
		}
		cursorArg = c
	}
	var last int64
	var sinceSeq, beforeSeq, cursor *int64
	err := s.pool.QueryRow(ctx, sqlWindow, w.id, timeArg(since), timeArg(before), cursorArg).Scan(&last, &sinceSeq, &beforeSeq, &cursor)
	if errors.Is(err, pgx.ErrNoRows) {
		return window{}, core.ErrNotFound
	}
	if err != nil {
		return window{}, classify(err)
	}
	w.last = uint64(last)
	seqOr := func(p *int64, set bool) uint64 {
		switch {
		case !set:
			return 0
		case p == nil: // no event that late: the end of the log
			return w.last + 1
		}
		return uint64(*p)
	}
	w.since, w.before = seqOr(sinceSeq, !since.IsZero()), seqOr(beforeSeq, !before.IsZero())
	if pageID != "" {
		if cursor == nil {
			return window{}, core.ErrUnknownPageID
		}
		w.cursor = uint64(*cursor)
	}
	if since.IsZero() {
		w.since = 1 // FirstSeqAtOrAfter(zero time): the first event
	}
	return w, nil
}

// timeArg is a time bound as a query argument: NULL for the zero time,
// else rounded up to the microsecond, since event timestamps are whole
// microseconds (so ts >= the rounded time exactly when ts >= t).
func timeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	r := t.Truncate(time.Microsecond)
	if r.Before(t) {
		r = r.Add(time.Microsecond)
	}
	return r
}

// queryEvents runs a query selecting eventColumns and decodes the rows.
func (s *Store) queryEvents(ctx context.Context, sql string, args ...any) ([]*core.Event, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	var out []*core.Event
	for rows.Next() {
		var (
			seq          int64
			id           [16]byte
			ts           time.Time
			source, kind string
			raw          []byte
			key          *string
		)
		if err := rows.Scan(&seq, &id, &ts, &source, &kind, &raw, &key); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		ev := &core.Event{
			ID: uuid.UUID(id).String(), Seq: uint64(seq), Timestamp: ts.UTC(),
			Source: core.Source(source), Kind: kind, Raw: raw,
		}
		if key != nil {
			ev.IdempotencyKey = *key
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(err)
	}
	return out, nil
}

// exists returns nil for a known conversation, else core.ErrNotFound.
func (s *Store) exists(ctx context.Context, id [16]byte) error {
	var seq int64
	err := s.pool.QueryRow(ctx, sqlLastSeq, id).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return core.ErrNotFound
	}
	return classify(err)
}
