package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/agent-server/agent-server/core"
)

const (
	// sqlKnownIDs finds which of a batch's event IDs are stored already,
	// and in which conversations.
	sqlKnownIDs = `SELECT id, conversation_id FROM events WHERE id = ANY($1)`
	// sqlAdvance is an element's condition and its effect on the
	// conversation's row in one statement: it matches only when the log
	// ends where the element starts and the element's epoch is current.
	sqlAdvance = `UPDATE conversations SET last_seq = $2, updated_at = $3
WHERE id = $1 AND last_seq = $4 AND epoch = $5`
	// sqlWhy reads why an element's sqlAdvance matched nothing.
	sqlWhy = `SELECT last_seq, epoch FROM conversations WHERE id = $1`
	// sqlLanded tells whether an event is stored: the read-back after a
	// commit whose outcome is unknown.
	sqlLanded = `SELECT EXISTS (SELECT 1 FROM events WHERE id = $1 AND conversation_id = $2)`
)

// eventColumnsCopied are the columns COPY fills, in order.
var eventColumnsCopied = []string{"conversation_id", "seq", "id", "ts", "source", "kind", "raw", "idempotency_key"}

// AppendBatch appends every element that meets its conditions in one
// transaction and one commit (see the package doc). A refused element gets
// its own error; when the transaction fails, every element not refused gets
// that error, wrapping core.ErrUnavailable when the database could not be
// reached. A transaction whose connection failed before COMMIT was sent
// stored nothing, so it is tried once more on a fresh connection: a pooled
// connection that died while idle (the database restarted) costs no post.
func (s *Store) AppendBatch(ctx context.Context, batch []core.Append) []error {
	errs, retry := s.appendOnce(ctx, batch)
	if retry {
		errs, _ = s.appendOnce(ctx, batch)
	}
	return errs
}

// appendOnce is one attempt at AppendBatch. retry reports a failure of the
// connection before COMMIT was sent.
func (s *Store) appendOnce(ctx context.Context, batch []core.Append) (errs []error, retry bool) {
	errs = make([]error, len(batch))
	fail := func(err error) []error {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("append to conversation %s: %w", batch[i].ConversationID, err)
			}
		}
		return errs
	}
	if err := s.check(); err != nil {
		return fail(err), false
	}
	ids, refused := parseBatch(batch)
	copy(errs, refused)

	tctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	tx, err := s.pool.Begin(tctx)
	if err != nil {
		return fail(classify(err)), isUnavailable(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }() // a no-op after Commit

	if err := refuseKnownIDs(tctx, tx, batch, ids, errs); err != nil {
		return fail(classify(err)), isUnavailable(err)
	}
	if err := advance(tctx, tx, batch, ids, errs); err != nil {
		return fail(classify(err)), isUnavailable(err)
	}
	rows, probe := copyRows(batch, ids, errs)
	if len(rows) == 0 {
		return errs, false // nothing passed: nothing to commit
	}
	if _, err := tx.CopyFrom(tctx, pgx.Identifier{"events"}, eventColumnsCopied, pgx.CopyFromRows(rows)); err != nil {
		return fail(classify(err)), isUnavailable(err)
	}
	err = tx.Commit(tctx)
	if err == nil {
		return errs, false
	}
	if !commitMayHaveLanded(err) {
		return fail(classify(err)), false
	}
	// The connection failed while COMMIT was in flight: the batch is either
	// wholly in or wholly out. Read back one of its events to know which.
	landed, rerr := s.readBack(ctx, probe)
	switch {
	case rerr != nil:
		return fail(fmt.Errorf("%w: the commit's outcome is unknown (%w), and reading it back failed: %w", core.ErrUnavailable, err, rerr)), false
	case landed:
		s.log.Warn("storage: the connection failed during COMMIT; read back: the batch is stored", "events", len(rows))
		return errs, false
	default:
		// Nothing of it is stored: as safe to try again as a failure
		// before COMMIT.
		s.log.Warn("storage: the connection failed during COMMIT; read back: the batch is not stored", "events", len(rows))
		return fail(classify(err)), isUnavailable(err)
	}
}

// eventKey is an event ID in its conversation: event IDs are unique
// within a conversation only.
type eventKey struct{ id, conversation [16]byte }

// parseBatch reads every event ID of the batch as a UUID, and refuses the
// elements that are malformed: an ID that is not a UUID or that appears
// twice in one conversation's events of the batch, or an event that was
// not sealed.
func parseBatch(batch []core.Append) (ids [][][16]byte, refused []error) {
	ids = make([][][16]byte, len(batch))
	refused = make([]error, len(batch))
	seen := make(map[eventKey]bool)
	for i, a := range batch {
		ids[i] = make([][16]byte, len(a.Events))
		conv, _ := parseUUID(a.ConversationID)
		for j, ev := range a.Events {
			u, ok := parseUUID(ev.ID)
			switch {
			case !ok:
				refused[i] = fmt.Errorf("conversation %s: event ID %q is not a UUID", a.ConversationID, ev.ID)
			case len(ev.Raw) == 0:
				refused[i] = fmt.Errorf("conversation %s: event %s is not sealed", a.ConversationID, ev.ID)
			case len(ev.IdempotencyKey) > core.MaxIdempotencyKey:
				refused[i] = fmt.Errorf("conversation %s: event %s: idempotency key longer than %d bytes", a.ConversationID, ev.ID, core.MaxIdempotencyKey)
			case seen[eventKey{u, conv}]:
				refused[i] = fmt.Errorf("conversation %s: event %s: %w", a.ConversationID, ev.ID, core.ErrDuplicateEventID)
			}
			if refused[i] != nil {
				break
			}
			ids[i][j] = u
			seen[eventKey{u, conv}] = true
		}
		if _, ok := parseUUID(a.ConversationID); !ok && refused[i] == nil {
			refused[i] = fmt.Errorf("conversation %s: %w", a.ConversationID, core.ErrNotFound)
		}
	}
	return ids, refused
}

// refuseKnownIDs refuses the elements carrying an event ID that is stored
// already, with one lookup for the whole batch.
func refuseKnownIDs(ctx context.Context, tx pgx.Tx, batch []core.Append, ids [][][16]byte, errs []error) error {
	var all [][16]byte
	for i := range batch {
		if errs[i] == nil {
			all = append(all, ids[i]...)
		}
	}
	if len(all) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, sqlKnownIDs, all)
	if err != nil {
		return err
	}
	known := make(map[eventKey]bool)
	for rows.Next() {
		var k eventKey
		if err := rows.Scan(&k.id, &k.conversation); err != nil {
			rows.Close()
			return err
		}
		known[k] = true
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, a := range batch {
		conv, _ := parseUUID(a.ConversationID)
		for j, id := range ids[i] {
			if errs[i] == nil && known[eventKey{id, conv}] {
				errs[i] = fmt.Errorf("conversation %s: event %s: %w", a.ConversationID, a.Events[j].ID, core.ErrDuplicateEventID)
			}
		}
	}
	return nil
}

// advance runs each remaining element's conditional UPDATE, pipelined in
// one round trip, in batch order (so two elements of one conversation see
// each other), and refuses the elements whose conditions failed, saying
// why.
func advance(ctx context.Context, tx pgx.Tx, batch []core.Append, ids [][][16]byte, errs []error) error {
	b := &pgx.Batch{}
	var queued []int
	for i, a := range batch {
		if errs[i] != nil || len(a.Events) == 0 {
			continue
		}
		first, last := a.Events[0], a.Events[len(a.Events)-1]
		for k, ev := range a.Events {
			if ev.Seq != first.Seq+uint64(k) {
				errs[i] = fmt.Errorf("conversation %s: event seq %d does not follow %d: %w", a.ConversationID, ev.Seq, first.Seq+uint64(k)-1, core.ErrSeqConflict)
				break
			}
		}
		if errs[i] != nil || first.Seq == 0 {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("conversation %s: event seq 0: %w", a.ConversationID, core.ErrSeqConflict)
			}
			continue
		}
		id, _ := parseUUID(a.ConversationID)
		b.Queue(sqlAdvance, id, int64(last.Seq), last.Timestamp, int64(first.Seq-1), int64(a.Epoch))
		queued = append(queued, i)
	}
	if len(queued) == 0 {
		return nil
	}
	res := tx.SendBatch(ctx, b)
	var missed []int
	for _, i := range queued {
		tag, err := res.Exec()
		if err != nil {
			res.Close()
			return err
		}
		if tag.RowsAffected() == 0 {
			missed = append(missed, i)
		}
	}
	if err := res.Close(); err != nil {
		return err
	}
	for _, i := range missed {
		if err := explain(ctx, tx, batch[i], &errs[i]); err != nil {
			return err
		}
	}
	return nil
}

// explain sets *errp to why element a's conditions failed.
func explain(ctx context.Context, tx pgx.Tx, a core.Append, errp *error) error {
	id, _ := parseUUID(a.ConversationID)
	var last, epoch int64
	err := tx.QueryRow(ctx, sqlWhy, id).Scan(&last, &epoch)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		*errp = fmt.Errorf("conversation %s: %w", a.ConversationID, core.ErrNotFound)
	case err != nil:
		return err
	case uint64(epoch) != a.Epoch:
		*errp = fmt.Errorf("conversation %s: epoch %d, the conversation is at %d: %w", a.ConversationID, a.Epoch, epoch, core.ErrFenced)
	default:
		*errp = fmt.Errorf("conversation %s: event seq %d, the log continues at %d: %w", a.ConversationID, a.Events[0].Seq, last+1, core.ErrSeqConflict)
	}
	return nil
}

// copyRows returns the rows of every element that passed, and one of
// their events for a read-back.
func copyRows(batch []core.Append, ids [][][16]byte, errs []error) (rows [][]any, probe eventKey) {
	for i, a := range batch {
		if errs[i] != nil {
			continue
		}
		conv, _ := parseUUID(a.ConversationID)
		for j, ev := range a.Events {
			var key any // NULL without one
			if ev.IdempotencyKey != "" {
				key = ev.IdempotencyKey
			}
			rows = append(rows, []any{conv, int64(ev.Seq), ids[i][j], ev.Timestamp, string(ev.Source), ev.Kind, ev.Raw, key})
			probe = eventKey{ids[i][j], conv}
		}
	}
	return rows, probe
}

// commitMayHaveLanded reports whether a failed COMMIT leaves the outcome
// unknown: anything but an error the server sent (which means it rolled
// back). pgconn.SafeToRetry is not enough here: it can call a COMMIT safe
// to retry (a "conn closed" lock error) after the COMMIT reached the wire,
// when the connection broke while its answer was awaited. Only reading
// back is sure.
func commitMayHaveLanded(err error) bool {
	var pgErr *pgconn.PgError
	return !errors.As(err, &pgErr)
}

// readBack asks, on a fresh connection, whether the event probe is stored,
// retrying while the database is unreachable until ctx ends: the answer
// decides whether a whole batch is acknowledged or failed.
func (s *Store) readBack(ctx context.Context, probe eventKey) (bool, error) {
	wait := 50 * time.Millisecond
	for {
		var landed bool
		qctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := s.pool.QueryRow(qctx, sqlLanded, probe.id, probe.conversation).Scan(&landed)
		cancel()
		if err == nil {
			return landed, nil
		}
		if !isUnavailable(err) {
			return false, err
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-s.life.Done():
			return false, fmt.Errorf("the store closed (last error: %w)", err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// AppendEvents appends events to one conversation in its own transaction.
func (s *Store) AppendEvents(ctx context.Context, id string, events []*core.Event) error {
	return s.AppendBatch(ctx, []core.Append{{ConversationID: id, Events: events}})[0]
}
