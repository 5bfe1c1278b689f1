package pgstore_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/pgstore"
	"github.com/agent-server/agent-server/core/pgstore/pgtest"
	"github.com/agent-server/agent-server/core/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// open returns a store on a fresh schema, ready (migrated), closed at the
// end of t.
func open(t *testing.T, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitReady(t, s, 60*time.Second)
	return s
}

func waitReady(t *testing.T, s *pgstore.Store, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := s.Ready(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store not ready after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) core.Store { return open(t, pgtest.DSN(t)) })
}

// Servers starting together on an empty database migrate it once: each
// waits on the advisory lock, and all come up on the same schema.
func TestConcurrentStartsMigrateOnce(t *testing.T) {
	dsn := pgtest.DSN(t)
	const n = 4
	stores := make([]*pgstore.Store, n)
	for i := range stores {
		s, err := pgstore.Open(dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	for _, s := range stores {
		waitReady(t, s, 60*time.Second)
	}
	// Each can use what another created.
	id := storetest.NewConversation(t, stores[0])
	for i, s := range stores {
		if _, err := s.Conversation(context.Background(), id); err != nil {
			t.Errorf("store %d: %v", i, err)
		}
	}
	v, err := pgstore.Migrate(context.Background(), dsn, nil)
	if err != nil || v != 3 {
		t.Errorf("Migrate on a migrated database = %d, %v; want version 3, nil", v, err)
	}
}

// Until its database answers, a store fails every call with ErrUnavailable
// and says so in Ready; then it becomes ready on its own.
func TestUnreachableThenReady(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Stop()
	s, err := pgstore.Open(pg.DSN("postgres"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Ready(ctx); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("Ready = %v, want ErrUnavailable", err)
	}
	if _, err := s.Conversations(ctx); !errors.Is(err, core.ErrUnavailable) {
		t.Errorf("Conversations = %v, want ErrUnavailable", err)
	}
	errs := s.AppendBatch(ctx, []core.Append{{ConversationID: core.NewID(), Events: []*core.Event{storetest.Sealed(t, 1, time.Now(), `{}`)}}})
	if !errors.Is(errs[0], core.ErrUnavailable) {
		t.Errorf("AppendBatch = %v, want ErrUnavailable", errs[0])
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s, 60*time.Second)
	storetest.NewConversation(t, s)
}

// A DSN's password never shows in an error.
func TestDSNPasswordNeverInErrors(t *testing.T) {
	const secret = "hunter2-pg-secret"
	for _, dsn := range []string{
		"postgres://app:" + secret + "@127.0.0.1:1/x?sslmode=disable&pool_max_conns=notanumber",
		"host=127.0.0.1 port=notaport user=app password=" + secret,
		"postgres://app:" + secret + "@[::1",
	} {
		_, err := pgstore.Open(dsn, nil)
		if err == nil {
			t.Errorf("Open(%s) accepted a malformed DSN", config.MaskDSN(dsn))
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	// A well-formed DSN to nowhere: the error Ready reports hides it too.
	s, err := pgstore.Open("postgres://app:"+secret+"@127.0.0.1:1/x?sslmode=disable", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.Sleep(300 * time.Millisecond)
	if err := s.Ready(context.Background()); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("Ready = %v: want an error without the password", err)
	}
}

// benchStore opens a store on a throwaway database, ready, closed at the
// benchmark's end.
func benchStore(b *testing.B) *pgstore.Store {
	s, err := pgstore.Open(pgtest.DSN(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	for deadline := time.Now().Add(time.Minute); s.Ready(context.Background()) != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal(s.Ready(context.Background()))
		}
	}
	return s
}

// BenchmarkSearch: go test -run '^$' -bench Search ./core/pgstore/
func BenchmarkSearch(b *testing.B) { storetest.BenchSearch(b, benchStore(b)) }

// BenchmarkFork: go test -run '^$' -bench Fork ./core/pgstore/
func BenchmarkFork(b *testing.B) { storetest.BenchFork(b, benchStore(b), 20_000) }

// Acquire fences: once a new epoch is taken, appends carrying an older one
// are refused and leave no trace, whatever their Seq.
func TestAcquireFences(t *testing.T) {
	s := open(t, pgtest.DSN(t))
	ctx := context.Background()
	id := storetest.NewConversation(t, s)
	t0 := time.Now().UTC()
	e1, last, err := s.Acquire(ctx, id)
	if err != nil || e1 != 1 || last != 0 {
		t.Fatalf("Acquire = %d, %d, %v; want 1, 0", e1, last, err)
	}
	ok := s.AppendBatch(ctx, []core.Append{{ConversationID: id, Epoch: e1, Events: []*core.Event{storetest.Sealed(t, 1, t0, `{}`)}}})
	if ok[0] != nil {
		t.Fatal(ok[0])
	}
	e2, last, err := s.Acquire(ctx, id)
	if err != nil || e2 != 2 || last != 1 {
		t.Fatalf("second Acquire = %d, %d, %v; want 2, 1", e2, last, err)
	}
	if e, err := s.Epoch(ctx, id); err != nil || e != 2 {
		t.Fatalf("Epoch = %d, %v; want 2", e, err)
	}
	stale := s.AppendBatch(ctx, []core.Append{
		{ConversationID: id, Epoch: e1, Events: []*core.Event{storetest.Sealed(t, 2, t0, `{}`)}},
		{ConversationID: id, Epoch: e2, Events: []*core.Event{storetest.Sealed(t, 2, t0, `{}`)}},
	})
	if !errors.Is(stale[0], core.ErrFenced) || stale[1] != nil {
		t.Fatalf("appends = %v; want the stale epoch fenced and the current one stored", stale)
	}
	if n, _ := s.LastSeq(ctx, id); n != 2 {
		t.Errorf("LastSeq = %d, want 2", n)
	}
	if _, _, err := s.Acquire(ctx, core.NewID()); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("Acquire of an unknown conversation = %v, want ErrNotFound", err)
	}
}
