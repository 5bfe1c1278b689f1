package memstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(*testing.T) core.Store { return New() })
}

func sealed(t *testing.T, seq uint64, ts time.Time) *core.Event {
	t.Helper()
	e := &core.Event{ID: core.NewID(), Seq: seq, Timestamp: ts, Source: core.SourceUser, Kind: core.KindMessage}
	if err := e.Seal(); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	s := New()
	c := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle}
	if _, created, err := s.CreateConversation(ctx, c); err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if _, created, _ := s.CreateConversation(ctx, c); created {
		t.Fatal("second create reported created")
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []*core.Event
	for i := 1; i <= 5; i++ {
		evs = append(evs, sealed(t, uint64(i), t0.Add(time.Duration(i)*time.Second)))
	}
	if err := s.AppendEvents(ctx, c.ID, evs[:3]); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEvents(ctx, c.ID, evs[4:]); err == nil {
		t.Fatal("append with a gap in seq accepted")
	}
	if err := s.AppendEvents(ctx, c.ID, evs[3:]); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		after    uint64
		limit    int
		wantSeqs []uint64
	}{
		{"all", 0, 0, []uint64{1, 2, 3, 4, 5}},
		{"after 2", 2, 0, []uint64{3, 4, 5}},
		{"limit", 1, 2, []uint64{2, 3}},
		{"past the end", 5, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Events(ctx, c.ID, tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.wantSeqs) {
				t.Fatalf("got %d events, want %d", len(got), len(tt.wantSeqs))
			}
			for i, e := range got {
				if e.Seq != tt.wantSeqs[i] {
					t.Errorf("event %d seq %d, want %d", i, e.Seq, tt.wantSeqs[i])
				}
			}
		})
	}

	for _, tc := range []struct {
		at   time.Time
		want uint64
	}{{t0, 1}, {t0.Add(3 * time.Second), 3}, {t0.Add(3500 * time.Millisecond), 4}, {t0.Add(time.Hour), 6}} {
		if got, _ := s.FirstSeqAtOrAfter(ctx, c.ID, tc.at); got != tc.want {
			t.Errorf("FirstSeqAtOrAfter(%s) = %d, want %d", tc.at, got, tc.want)
		}
	}
	if got, _ := s.LastSeq(ctx, c.ID); got != 5 {
		t.Errorf("LastSeq = %d", got)
	}
	if e, err := s.EventByID(ctx, c.ID, evs[2].ID); err != nil || e.Seq != 3 {
		t.Errorf("EventByID = %v, %v", e, err)
	}
	if err := s.DeleteConversation(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"conversation": func() error { _, err := s.Conversation(ctx, c.ID); return err }(),
		"events":       func() error { _, err := s.Events(ctx, c.ID, 0, 0); return err }(),
		"delete again": s.DeleteConversation(ctx, c.ID),
	} {
		if !errors.Is(err, core.ErrNotFound) {
			t.Errorf("%s after delete: %v, want ErrNotFound", name, err)
		}
	}
}

// Returned conversations are copies: changing one does not change the store.
func TestConversationsAreCopies(t *testing.T) {
	ctx := context.Background()
	s := New()
	c := &core.Conversation{ID: core.NewID(), Title: "a"}
	if _, _, err := s.CreateConversation(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Title = "changed by caller"
	got, _ := s.Conversation(ctx, c.ID)
	got.Title = "changed again"
	if again, _ := s.Conversation(ctx, c.ID); again.Title != "a" {
		t.Fatalf("title = %q, want the stored %q", again.Title, "a")
	}
}
