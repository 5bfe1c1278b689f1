package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/agent-server/agent-server/core"
)

const (
	sqlCreateConversation = `INSERT INTO conversations (id, doc, execution_status, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING`
	sqlConversation  = `SELECT doc, updated_at, last_seq FROM conversations WHERE id = $1`
	sqlConversations = `SELECT doc, updated_at, last_seq FROM conversations`
	// An empty log's updated_at follows the document; once events exist,
	// appends own it. An epoch other than 0 must be the current one, as an
	// append's must (sqlAdvance).
	sqlUpdateConversation = `UPDATE conversations
SET doc = $2, execution_status = $3, updated_at = CASE WHEN last_seq = 0 THEN $4 ELSE updated_at END
WHERE id = $1 AND ($5::bigint = 0 OR epoch = $5::bigint)`
	sqlDeleteConversation = `DELETE FROM conversations WHERE id = $1`
	// sqlAcquire takes a new ownership epoch: appends of older epochs match
	// nothing from now on (sqlAdvance checks it).
	sqlAcquire = `UPDATE conversations SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch, last_seq`
	sqlEpoch   = `SELECT epoch FROM conversations WHERE id = $1`
)

// CreateConversation stores c unless its ID exists.
func (s *Store) CreateConversation(ctx context.Context, c *core.Conversation) (*core.Conversation, bool, error) {
	if err := s.check(); err != nil {
		return nil, false, fmt.Errorf("create conversation %s: %w", c.ID, err)
	}
	id, ok := parseUUID(c.ID)
	if !ok {
		return nil, false, fmt.Errorf("create conversation %q: the id is not a UUID", c.ID)
	}
	doc, err := json.Marshal(c)
	if err != nil {
		return nil, false, fmt.Errorf("create conversation %s: encode: %w", c.ID, err)
	}
	tag, err := s.pool.Exec(ctx, sqlCreateConversation, id, doc, string(c.ExecutionStatus), c.CreatedAt, c.UpdatedAt)
	if err != nil {
		return nil, false, fmt.Errorf("create conversation %s: %w", c.ID, classify(err))
	}
	if tag.RowsAffected() == 1 {
		return c.Clone(), true, nil
	}
	stored, err := s.Conversation(ctx, c.ID)
	if err != nil {
		return nil, false, err
	}
	return stored, false, nil
}

// Conversation returns the conversation id.
func (s *Store) Conversation(ctx context.Context, id string) (*core.Conversation, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("conversation %s: %w", id, err)
	}
	u, ok := parseUUID(id)
	if !ok {
		return nil, fmt.Errorf("conversation %s: %w", id, core.ErrNotFound)
	}
	c, err := scanConversation(s.pool.QueryRow(ctx, sqlConversation, u))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("conversation %s: %w", id, core.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("conversation %s: %w", id, classify(err))
	}
	return c, nil
}

// Conversations returns every conversation, in no set order.
func (s *Store) Conversations(ctx context.Context) ([]*core.Conversation, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("list conversations: %w", err)
	}
	rows, err := s.pool.Query(ctx, sqlConversations)
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", classify(err))
	}
	var out []*core.Conversation
	for rows.Next() {
		c, err := scanConversation(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list conversations: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list conversations: %w", classify(err))
	}
	return out, nil
}

// scanConversation decodes a row of doc, updated_at, last_seq: once the log
// has events, updated_at is the last event's timestamp, as appends set it.
func scanConversation(row pgx.Row) (*core.Conversation, error) {
	var doc []byte
	var updated time.Time
	var lastSeq int64
	if err := row.Scan(&doc, &updated, &lastSeq); err != nil {
		return nil, err
	}
	c := new(core.Conversation)
	if err := json.Unmarshal(doc, c); err != nil {
		return nil, fmt.Errorf("decode conversation: %w", err)
	}
	if lastSeq > 0 {
		c.UpdatedAt = updated.UTC()
	}
	return c, nil
}

// UpdateConversation replaces the metadata of c.ID, if epoch is 0 or the
// conversation's current one.
func (s *Store) UpdateConversation(ctx context.Context, c *core.Conversation, epoch uint64) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("update conversation %s: %w", c.ID, err)
	}
	u, ok := parseUUID(c.ID)
	if !ok {
		return fmt.Errorf("update conversation %s: %w", c.ID, core.ErrNotFound)
	}
	doc, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("update conversation %s: encode: %w", c.ID, err)
	}
	tag, err := s.pool.Exec(ctx, sqlUpdateConversation, u, doc, string(c.ExecutionStatus), c.UpdatedAt, int64(epoch))
	if err != nil {
		return fmt.Errorf("update conversation %s: %w", c.ID, classify(err))
	}
	if tag.RowsAffected() == 0 {
		if epoch != 0 {
			// Missing, or owned by a newer activation: the row says which.
			if current, err := s.Epoch(ctx, c.ID); err == nil {
				return fmt.Errorf("update conversation %s: epoch %d, the conversation is at %d: %w", c.ID, epoch, current, core.ErrFenced)
			} else if !errors.Is(err, core.ErrNotFound) {
				return fmt.Errorf("update conversation %s: %w", c.ID, err)
			}
		}
		return fmt.Errorf("update conversation %s: %w", c.ID, core.ErrNotFound)
	}
	return nil
}

// DeleteConversation removes a conversation and, by the foreign key's
// cascade, its whole log.
func (s *Store) DeleteConversation(ctx context.Context, id string) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("delete conversation %s: %w", id, err)
	}
	u, ok := parseUUID(id)
	if !ok {
		return fmt.Errorf("delete conversation %s: %w", id, core.ErrNotFound)
	}
	tag, err := s.pool.Exec(ctx, sqlDeleteConversation, u)
	if err != nil {
		return fmt.Errorf("delete conversation %s: %w", id, classify(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete conversation %s: %w", id, core.ErrNotFound)
	}
	return nil
}

// Acquire takes a new ownership epoch for the conversation (see
// core.Fencer) and returns it with the log's last Seq.
func (s *Store) Acquire(ctx context.Context, id string) (epoch, lastSeq uint64, err error) {
	if err := s.check(); err != nil {
		return 0, 0, fmt.Errorf("acquire conversation %s: %w", id, err)
	}
	u, ok := parseUUID(id)
	if !ok {
		return 0, 0, fmt.Errorf("acquire conversation %s: %w", id, core.ErrNotFound)
	}
	var e, last int64
	err = s.pool.QueryRow(ctx, sqlAcquire, u).Scan(&e, &last)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, fmt.Errorf("acquire conversation %s: %w", id, core.ErrNotFound)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("acquire conversation %s: %w", id, classify(err))
	}
	return uint64(e), uint64(last), nil
}

// Epoch returns the conversation's current ownership epoch.
func (s *Store) Epoch(ctx context.Context, id string) (uint64, error) {
	if err := s.check(); err != nil {
		return 0, fmt.Errorf("epoch of conversation %s: %w", id, err)
	}
	u, ok := parseUUID(id)
	if !ok {
		return 0, fmt.Errorf("epoch of conversation %s: %w", id, core.ErrNotFound)
	}
	var e int64
	err := s.pool.QueryRow(ctx, sqlEpoch, u).Scan(&e)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("epoch of conversation %s: %w", id, core.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("epoch of conversation %s: %w", id, classify(err))
	}
	return uint64(e), nil
}

var _ core.Fencer = (*Store)(nil)

// parseUUID reads a conversation or event ID. The columns are uuid: an ID
// that is not one names nothing stored.
func parseUUID(s string) ([16]byte, bool) {
	u, err := uuid.Parse(s)
	if err != nil {
		return [16]byte{}, false
	}
	return u, true
}
