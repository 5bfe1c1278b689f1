package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/golang-migrate/migrate/v4"
	pgxmigrate "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// Migrate applies every migration to the database dsn names, for operators
// who migrate as a deploy step of its own (agent-server storage migrate).
// While the database is unreachable it retries, until ctx ends. It returns
// the schema version it left.
func Migrate(ctx context.Context, dsn string, log *slog.Logger) (uint, error) {
	pool, err := newPool(dsn)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	wait := 100 * time.Millisecond
	for {
		err := migrateUp(ctx, pool)
		if err == nil {
			return schemaVersion(ctx, pool)
		}
		if !errors.Is(err, errUnreachable) {
			return 0, err
		}
		if log != nil {
			log.Warn("storage: postgres unreachable; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("migrate: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// errUnreachable marks a migration that failed because the database could
// not be reached, as opposed to one the database refused.
var errUnreachable = errors.New("database unreachable")

// migrateUp applies the embedded migrations under golang-migrate's
// advisory lock, so that servers starting together apply each once.
func migrateUp(ctx context.Context, pool *pgxpool.Pool) error {
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", errUnreachable, classify(err))
	}
	src, err := iofs.New(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	drv, err := pgxmigrate.WithInstance(db, &pgxmigrate.Config{})
	if err != nil {
		return fmt.Errorf("%w: %w", errUnreachable, classify(err))
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer m.Close()
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		if isUnavailable(err) {
			return fmt.Errorf("%w: migrate: %w", errUnreachable, classify(err))
		}
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// schemaVersion reads the version golang-migrate recorded.
func schemaVersion(ctx context.Context, pool *pgxpool.Pool) (uint, error) {
	var v int64
	if err := pool.QueryRow(ctx, "SELECT version FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", classify(err))
	}
	return uint(v), nil
}
