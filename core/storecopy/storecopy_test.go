package storecopy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/boltstore"
	"github.com/agent-server/agent-server/core/pgstore"
	"github.com/agent-server/agent-server/core/pgstore/pgtest"
	"github.com/agent-server/agent-server/core/storecopy"
	"github.com/agent-server/agent-server/core/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func openBolt(t *testing.T) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "store.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openPG(t *testing.T) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(pgtest.DSN(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for deadline := time.Now().Add(60 * time.Second); s.Ready(context.Background()) != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(s.Ready(context.Background()))
		}
	}
	return s
}

// fill creates n conversations with events each, the first with none.
func fill(t *testing.T, s core.Store, n, events int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		id := storetest.NewConversation(t, s)
		ids = append(ids, id)
		var evs []*core.Event
		for j := 1; i > 0 && j <= events; j++ {
			evs = append(evs, storetest.Sealed(t, uint64(j), t0.Add(time.Duration(j)*time.Millisecond), fmt.Sprintf(`{"n":%d,"html":"<b>&</b>"}`, j)))
		}
		if len(evs) > 0 {
			if err := s.AppendEvents(ctx, id, evs); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ids
}

// same checks that b holds exactly a's conversations and events.
func same(t *testing.T, a, b core.Store, ids []string) {
	t.Helper()
	ctx := context.Background()
	for _, id := range ids {
		ca, err1 := a.Conversation(ctx, id)
		cb, err2 := b.Conversation(ctx, id)
		if err1 != nil || err2 != nil || !ca.CreatedAt.Equal(cb.CreatedAt) || !ca.UpdatedAt.Equal(cb.UpdatedAt) || ca.Title != cb.Title {
			t.Fatalf("conversation %s: %+v (%v) vs %+v (%v)", id, ca, err1, cb, err2)
		}
		ea, _ := a.Events(ctx, id, 0, 0)
		eb, _ := b.Events(ctx, id, 0, 0)
		if len(ea) != len(eb) {
			t.Fatalf("conversation %s: %d events vs %d", id, len(ea), len(eb))
		}
		for i := range ea {
			if ea[i].ID != eb[i].ID || ea[i].Seq != eb[i].Seq || !ea[i].Timestamp.Equal(eb[i].Timestamp) || string(ea[i].Raw) != string(eb[i].Raw) {
				t.Fatalf("conversation %s event %d differs: %+v vs %+v", id, i, ea[i], eb[i])
			}
		}
	}
}

// Bolt to PostgreSQL and back gives the same conversations and events, IDs,
// Seq, timestamps and bytes, a fork's too (whose events share their IDs
// with its source's); a rerun skips everything and copies nothing.
func TestCopyBothWays(t *testing.T) {
	ctx := context.Background()
	bolt, pg, back := openBolt(t), openPG(t), openBolt(t)
	ids := fill(t, bolt, 4, 2500) // more than one page per log
	at := time.Date(2026, 5, 3, 0, 0, 0, 0, time.UTC)
	fork := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle, CreatedAt: at, UpdatedAt: at, ForkedFromConversationID: ids[1]}
	if err := bolt.ForkConversation(ctx, fork, core.ForkSource{ConversationID: ids[1], Through: 2500}); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, fork.ID)
	var seen []storecopy.Stats
	st, err := storecopy.Copy(ctx, bolt, pg, func(s storecopy.Stats) { seen = append(seen, s) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Conversations != 5 || st.Created != 5 || st.EventsCopied != 4*2500 || st.EventsSkipped != 0 || len(seen) < 5 {
		t.Errorf("first copy: %+v after %d progress reports", st, len(seen))
	}
	same(t, bolt, pg, ids)
	if st, err = storecopy.Copy(ctx, pg, back, nil); err != nil || st.EventsCopied != 4*2500 {
		t.Fatalf("copy back: %+v %v", st, err)
	}
	same(t, bolt, back, ids)

	// A rerun after more events: what is there is skipped, the rest copied.
	more := storetest.Sealed(t, 2501, time.Date(2026, 5, 2, 0, 0, 0, 0, time.UTC), `{}`)
	if err := bolt.AppendEvents(ctx, ids[1], []*core.Event{more}); err != nil {
		t.Fatal(err)
	}
	st, err = storecopy.Copy(ctx, bolt, pg, nil)
	if err != nil || st.Created != 0 || st.EventsCopied != 1 || st.EventsSkipped != 4*2500 {
		t.Fatalf("rerun: %+v %v, want 1 copied and the rest skipped", st, err)
	}
	same(t, bolt, pg, ids)
}

// A target that diverged stops the copy with an error naming where.
func TestCopyStopsAtDivergence(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		setup func(t *testing.T, src, dst core.Store, id string)
		want  string
	}{
		{"another event at a seq", func(t *testing.T, src, dst core.Store, id string) {
			if err := dst.AppendEvents(ctx, id, []*core.Event{storetest.Sealed(t, 1, t0, `{"other":true}`)}); err != nil {
				t.Fatal(err)
			}
		}, "event 1"},
		{"a longer log", func(t *testing.T, src, dst core.Store, id string) {
			evs, _ := src.Events(ctx, id, 0, 0)
			if err := dst.AppendEvents(ctx, id, append(evs, storetest.Sealed(t, uint64(len(evs)+1), t0, `{}`))); err != nil {
				t.Fatal(err)
			}
		}, "the target's log has"},
		{"created at another time", func(t *testing.T, src, dst core.Store, id string) {
			c, _ := src.Conversation(ctx, id)
			c = c.Clone()
			c.CreatedAt = c.CreatedAt.Add(-time.Hour)
			if _, _, err := dst.CreateConversation(ctx, c); err != nil {
				t.Fatal(err)
			}
		}, "created at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := openBolt(t), openPG(t)
			id := fill(t, src, 2, 3)[1]
			c, _ := src.Conversation(ctx, id)
			if tt.name != "created at another time" {
				if _, _, err := dst.CreateConversation(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			tt.setup(t, src, dst, id)
			_, err := storecopy.Copy(ctx, src, dst, nil)
			var d *storecopy.DivergedError
			if !errors.As(err, &d) || d.ConversationID != id || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("copy = %v, want a divergence at %s naming %q", err, id, tt.want)
			}
		})
	}
}
