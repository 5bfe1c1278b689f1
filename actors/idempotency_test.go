package actors

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/memstore"
)

func postKeyed(sys *System, id, key, text string) (*core.Event, error) {
	return sys.PostEvent(WithIdempotencyKey(context.Background(), key), id, core.SourceUser, core.KindMessage, messageBody(text))
}

// A retry with the same key appends nothing and answers as the first post
// did, in the same activation, after a restart (the key is found in the
// store), and while the first post is still in flight; the key with
// another body is refused.
func TestIdempotentPosts(t *testing.T) {
	t.Run("same activation", func(t *testing.T) {
		sys := startSystem(t, memstore.New(), 0)
		id := createConv(t, sys)
		first, err := postKeyed(sys, id, "k1", "hello")
		if err != nil {
			t.Fatal(err)
		}
		again, err := postKeyed(sys, id, "k1", "hello")
		if err != nil || again.ID != first.ID || again.Seq != first.Seq {
			t.Fatalf("retry = %+v, %v; want the first post's event %s", again, err, first.ID)
		}
		if _, err := postKeyed(sys, id, "k1", "another body"); !errors.Is(err, core.ErrKeyReused) {
			t.Fatalf("the key with another body: %v, want ErrKeyReused", err)
		}
		if ev := post(t, sys, id, "next"); ev.Seq != 2 {
			t.Fatalf("the next post has seq %d, want 2: a retry appended something", ev.Seq)
		}
	})
	t.Run("after a restart", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "store.db")
		st := openBolt(t, path)
		sys := startSystem(t, st, 0)
		id := createConv(t, sys)
		first, err := postKeyed(sys, id, "k2", "hello")
		if err != nil {
			t.Fatal(err)
		}
		shutdown(t, sys)
		st.Close()
		st = openBolt(t, path)
		defer st.Close()
		sys = startSystem(t, st, 0)
		again, err := postKeyed(sys, id, "k2", "hello")
		if err != nil || again.ID != first.ID {
			t.Fatalf("retry after a restart = %+v, %v; want %s", again, err, first.ID)
		}
		if n, _ := st.LastSeq(context.Background(), id); n != 1 {
			t.Fatalf("the log has %d events, want 1", n)
		}
	})
	t.Run("while the first is in flight", func(t *testing.T) {
		g := &gatedStore{Store: memstore.New(), gate: make(chan struct{}), entered: make(chan struct{}, 1)}
		sys := startSystem(t, g, 0)
		id := createConv(t, sys)
		const n = 5
		evs := make([]*core.Event, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		wg.Go(func() { evs[0], errs[0] = postKeyed(sys, id, "k3", "once") })
		<-g.entered // the first is at the store's gate
		for i := 1; i < n; i++ {
			wg.Go(func() { evs[i], errs[i] = postKeyed(sys, id, "k3", "once") })
		}
		time.Sleep(200 * time.Millisecond) // let the duplicates reach the actor while the first waits
		close(g.gate)
		wg.Wait()
		for i := range n {
			if errs[i] != nil || evs[i].ID != evs[0].ID {
				t.Fatalf("post %d = %+v, %v; want the one event %s", i, evs[i], errs[i], evs[0].ID)
			}
		}
		if last, _ := g.LastSeq(context.Background(), id); last != 1 {
			t.Fatalf("the log has %d events, want 1", last)
		}
	})
}
