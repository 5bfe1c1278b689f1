package boltstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/storetest"
)

func open(t *testing.T) core.Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "data", "test.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) { storetest.Run(t, open) }

// TestReopen closes the file and opens it again: everything is there.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := storetest.NewConversation(t, s)
	ev := storetest.Sealed(t, 1, time.Now().UTC(), `{"x":"y"}`)
	if err := s.AppendEvents(ctx, id, []*core.Event{ev}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.EventByID(ctx, id, ev.ID)
	if err != nil || string(got.Raw) != string(ev.Raw) {
		t.Fatalf("after reopen: %v, %v", got, err)
	}
}

// A second process (here: a second Open) cannot open a file in use.
func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := Open(path, Options{Timeout: 50 * time.Millisecond}); err == nil {
		s2.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
}

// BenchmarkSearch: go test -run '^$' -bench Search ./core/boltstore/
func BenchmarkSearch(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchSearch(b, s)
}

// BenchmarkFork: go test -run '^$' -bench Fork ./core/boltstore/ (durable
// commits, as the server runs).
func BenchmarkFork(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchFork(b, s, 20_000)
}
