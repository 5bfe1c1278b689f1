// Package pgstore is the core.Store in PostgreSQL (storage.driver:
// postgres): every conversation and event in one database that several
// servers share, which is what cluster mode builds on.
//
// # Layout
//
// The schema is created and upgraded by the numbered migrations embedded
// from migrations/, applied at start under PostgreSQL's advisory lock
// (golang-migrate), so servers starting together do not race:
//
//	conversations  id, doc (the conversation's JSON), execution_status,
//	               created_at, updated_at, last_seq, epoch
//	events         (conversation_id, seq) primary key, id (unique), ts,
//	               source, kind, raw (the sealed wire form)
//
// with indexes for the server's access paths: a Seq range (the primary
// key), an event by ID (events_id), the first event at or after a time
// (events_ts), and search or count by kind (events_kind).
//
// # Appends
//
// AppendBatch is one transaction and one commit for everything the
// writer gathered across conversations. Each element's conditions are
// checked before anything is inserted, so a refused element leaves no
// trace and does not abort the transaction: the IDs are looked up first,
// then each element is one conditional UPDATE of its conversation's row
// (last_seq must be where the element starts, epoch must be the
// element's), and only the events of the elements that passed are copied
// in (COPY). When the connection fails while COMMIT is in flight, the
// outcome is unknown: the store reads back whether the batch landed
// before it answers, so an element is never reported failed when it was
// stored, nor stored when it was reported failed.
//
// # Availability
//
// Open returns at once. The migrations run in the background, retried
// while the database is unreachable; until they have been applied, and
// whenever the database cannot be reached, calls fail with an error
// wrapping core.ErrUnavailable, and Ready says why.
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agent-server/agent-server/core"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Timeouts of the store's own calls into the database.
const (
	// connectTimeout bounds one connection attempt when the DSN sets no
	// connect_timeout: a database that accepts the TCP connection but
	// never answers (stopped, or behind a dead link) must not hang a call.
	connectTimeout = 5 * time.Second
	// writeTimeout bounds one append transaction.
	writeTimeout = 30 * time.Second
	// pingTimeout bounds Ready's round trip.
	pingTimeout = 2 * time.Second
)

// Store is a core.Store in PostgreSQL, safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	migrated atomic.Bool
	mu       sync.Mutex
	notYet   error // why the schema is not ready, until migrated

	life   context.Context // ends at Close
	cancel context.CancelFunc
	done   chan struct{}
}

// Open parses dsn and returns the store at once, before it has reached the
// database: the migrations run in the background, retried with backoff
// while the database is unreachable, and until they have been applied
// every call fails with core.ErrUnavailable. Pool settings come from the
// DSN's pool_* parameters. Errors never contain the DSN's password.
func Open(dsn string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pool, err := newPool(dsn)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{pool: pool, log: log, life: ctx, cancel: cancel, done: make(chan struct{}),
		notYet: errors.New("the schema migrations have not been applied yet")}
	go s.migrateLoop(ctx)
	return s, nil
}

// newPool builds the connection pool without connecting.
func newPool(dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn masks the password in its parse errors.
		return nil, fmt.Errorf("storage.postgres.dsn: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("storage.postgres.dsn: %w", err)
	}
	return pool, nil
}

// migrateLoop applies the migrations, retrying while the database cannot
// be reached, until it succeeds or the store closes.
func (s *Store) migrateLoop(ctx context.Context) {
	defer close(s.done)
	wait := 100 * time.Millisecond
	var lastLogged string
	for {
		err := migrateUp(ctx, s.pool)
		if err == nil {
			s.migrated.Store(true)
			s.log.Info("storage: postgres schema is up to date")
			return
		}
		s.mu.Lock()
		s.notYet = err
		s.mu.Unlock()
		if msg := err.Error(); msg != lastLogged {
			s.log.Warn("storage: postgres not ready; retrying", "err", err)
			lastLogged = msg
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// Ready reports nil when the schema is migrated and the database answers,
// else an error wrapping core.ErrUnavailable that says why.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", classify(err))
	}
	return nil
}

// check fails with core.ErrUnavailable until the schema is migrated.
func (s *Store) check() error {
	if s.migrated.Load() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Errorf("postgres: %w: %w", core.ErrUnavailable, s.notYet)
}

// Close stops the migrations if they still run and closes the pool.
func (s *Store) Close() error {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second): // blocked on another server's migration lock
	}
	s.pool.Close()
	return nil
}

var _ core.Store = (*Store)(nil)
