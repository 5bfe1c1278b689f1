package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/agent-server/agent-server/core"
)

// A fork is one transaction, and its events never leave the database: they
// are copied by one INSERT ... SELECT. The source's row is not locked, so
// the source's appends go on meanwhile; the copy reads the events the
// statement's snapshot holds, which are immutable once stored.
const (
	sqlForkSource = `SELECT last_seq FROM conversations WHERE id = $1`
	// sqlForkThrough copies a prefix of the log: the Seq stay the same.
	sqlForkThrough = `INSERT INTO events (conversation_id, seq, id, ts, source, kind, raw)
SELECT $1, seq, id, ts, source, kind, raw FROM events WHERE conversation_id = $2 AND seq <= $3`
	// sqlForkSeqs copies the events named, numbered from 1 in Seq order.
	sqlForkSeqs = `INSERT INTO events (conversation_id, seq, id, ts, source, kind, raw)
SELECT $1, row_number() OVER (ORDER BY seq), id, ts, source, kind, raw FROM events WHERE conversation_id = $2 AND seq = ANY($3)`
	// sqlForkEnd sets where the fork's log ends and, as an append would,
	// its updated_at.
	sqlForkEnd = `UPDATE conversations SET last_seq = $2,
updated_at = COALESCE((SELECT ts FROM events WHERE conversation_id = $1 AND seq = $2), updated_at) WHERE id = $1`
)

// ForkConversation stores fork with copies of the events from names, in
// one transaction.
func (s *Store) ForkConversation(ctx context.Context, fork *core.Conversation, from core.ForkSource) error {
	fail := func(err error) error {
		return fmt.Errorf("fork %s from %s: %w", fork.ID, from.ConversationID, err)
	}
	if err := s.check(); err != nil {
		return fail(err)
	}
	id, ok := parseUUID(fork.ID)
	if !ok {
		return fail(fmt.Errorf("the fork's id %q is not a UUID", fork.ID))
	}
	src, ok := parseUUID(from.ConversationID)
	if !ok {
		return fail(core.ErrNotFound)
	}
	for i, seq := range from.Seqs {
		if seq == 0 || (i > 0 && seq <= from.Seqs[i-1]) {
			return fail(fmt.Errorf("event seq %d: %w", seq, core.ErrNotFound))
		}
	}
	doc, err := json.Marshal(fork)
	if err != nil {
		return fail(fmt.Errorf("encode: %w", err))
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fail(classify(err))
	}
	defer func() { _ = tx.Rollback(context.Background()) }() // a no-op after Commit
	tag, err := tx.Exec(ctx, sqlCreateConversation, id, doc, string(fork.ExecutionStatus), fork.CreatedAt, fork.UpdatedAt)
	if err != nil {
		return fail(classify(err))
	}
	if tag.RowsAffected() == 0 {
		return fail(core.ErrConversationExists)
	}
	var last int64
	if err := tx.QueryRow(ctx, sqlForkSource, src).Scan(&last); errors.Is(err, pgx.ErrNoRows) {
		return fail(core.ErrNotFound)
	} else if err != nil {
		return fail(classify(err))
	}
	want := int64(from.Len())
	if want > 0 {
		if from.Seqs != nil {
			seqs := make([]int64, len(from.Seqs))
			for i, seq := range from.Seqs {
				seqs[i] = int64(seq)
			}
			tag, err = tx.Exec(ctx, sqlForkSeqs, id, src, seqs)
		} else {
			tag, err = tx.Exec(ctx, sqlForkThrough, id, src, int64(from.Through))
		}
		if err != nil {
			return fail(classify(err))
		}
		if tag.RowsAffected() != want {
			return fail(fmt.Errorf("the source holds %d of the %d events asked (its log ends at %d): %w", tag.RowsAffected(), want, last, core.ErrNotFound))
		}
		if _, err := tx.Exec(ctx, sqlForkEnd, id, want); err != nil {
			return fail(classify(err))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fail(classify(err))
	}
	return nil
}
