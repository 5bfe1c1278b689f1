package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/boltstore"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/pgstore"
	"github.com/agent-server/agent-server/core/storecopy"
)

// envDSN is the environment variable a bare "postgres:" store spec reads,
// the same one that sets storage.postgres.dsn.
const envDSN = config.EnvPrefix + "STORAGE__POSTGRES__DSN"

// storageMigrate is `agent-server storage migrate`: apply the PostgreSQL
// schema migrations of storage.postgres.dsn without serving, retrying
// while the database is unreachable, for up to --timeout.
func storageMigrate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("storage migrate", flag.ContinueOnError)
	file := fs.String("config", "", "config file (default ./config.yaml if it exists)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the database")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := configFlags{file: *file}.load()
	if err != nil {
		return err
	}
	if cfg.Storage.Driver != config.DriverPostgres {
		return fmt.Errorf("storage migrate: storage.driver is %q; migrations are for postgres", cfg.Storage.Driver)
	}
	ctx, cancel := signalContext(*timeout)
	defer cancel()
	v, err := pgstore.Migrate(ctx, cfg.Storage.Postgres.DSN, newLogger(cfg.Log, stderr))
	if err != nil {
		return fmt.Errorf("storage migrate: %w", err)
	}
	fmt.Fprintf(stdout, "postgres schema is at version %d\n", v)
	return nil
}

// storageCopy is `agent-server storage copy --from SPEC --to SPEC`, where a
// SPEC is bolt:PATH or postgres:DSN (postgres: alone reads the DSN from
// AGENT_SERVER_STORAGE__POSTGRES__DSN, so that no password shows in ps).
// It prints progress to stderr at most once a second.
func storageCopy(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("storage copy", flag.ContinueOnError)
	fromSpec := fs.String("from", "", "source store: bolt:PATH or postgres:[DSN]")
	toSpec := fs.String("to", "", "target store: bolt:PATH or postgres:[DSN]")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *fromSpec == "" || *toSpec == "" || fs.NArg() > 0 {
		return errors.New("storage copy: usage: agent-server storage copy --from bolt:PATH|postgres:[DSN] --to bolt:PATH|postgres:[DSN]")
	}
	ctx, cancel := signalContext(*timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	from, err := openSpec(ctx, *fromSpec, log)
	if err != nil {
		return fmt.Errorf("storage copy: --from: %w", err)
	}
	defer from.Close()
	to, err := openSpec(ctx, *toSpec, log)
	if err != nil {
		return fmt.Errorf("storage copy: --to: %w", err)
	}
	defer to.Close()

	start, last := time.Now(), time.Time{}
	progress := func(s storecopy.Stats) {
		if time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		fmt.Fprintf(stderr, "copy: %d/%d conversations, %d events copied, %d already there\n", s.ConversationsDone, s.Conversations, s.EventsCopied, s.EventsSkipped)
	}
	st, err := storecopy.Copy(ctx, from, to, progress)
	if err != nil {
		return fmt.Errorf("storage copy: %w (done so far: %d/%d conversations, %d events copied; rerun to resume)", err, st.ConversationsDone, st.Conversations, st.EventsCopied)
	}
	fmt.Fprintf(stdout, "copied %d conversations (%d new) and %d events (%d already there) in %s\n",
		st.Conversations, st.Created, st.EventsCopied, st.EventsSkipped, time.Since(start).Round(time.Millisecond))
	return nil
}

// closingStore is a store the copy opened and must close.
type closingStore interface {
	core.Store
	Close() error
}

// openSpec opens bolt:PATH or postgres:[DSN], waiting for a postgres
// store's schema (it migrates it if needed) until ctx ends.
func openSpec(ctx context.Context, spec string, log *slog.Logger) (closingStore, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	switch {
	case ok && kind == config.DriverBolt && rest != "":
		s, err := boltstore.Open(rest, boltstore.Options{Timeout: 5 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("%w (is a server still running on this file? stop it first)", err)
		}
		return s, nil
	case ok && kind == config.DriverPostgres:
		dsn := rest
		if dsn == "" {
			if dsn = os.Getenv(envDSN); dsn == "" {
				return nil, fmt.Errorf("postgres: without a DSN reads %s, which is not set", envDSN)
			}
		}
		s, err := pgstore.Open(dsn, log)
		if err != nil {
			return nil, err
		}
		for {
			err := s.Ready(ctx)
			if err == nil {
				return s, nil
			}
			select {
			case <-ctx.Done():
				s.Close()
				return nil, fmt.Errorf("the database is not ready: %w", err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil, fmt.Errorf("%q: want bolt:PATH or postgres:[DSN]", maskSpec(spec))
}

// maskSpec hides a DSN's password in an error message.
func maskSpec(spec string) string {
	if kind, rest, ok := strings.Cut(spec, ":"); ok && kind == config.DriverPostgres {
		return kind + ":" + config.MaskDSN(rest)
	}
	if strings.Contains(spec, "://") {
		return config.MaskDSN(spec)
	}
	return spec
}

// signalContext ends on SIGINT or SIGTERM, or after timeout when positive.
func signalContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if timeout <= 0 {
		return ctx, stop
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	return tctx, func() { cancel(); stop() }
}
