package actors

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/boltstore"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/memstore"
)

// startSystem runs a System over st, shut down at cleanup (or earlier by
// the test; Shutdown may be called twice).
func startSystem(t testing.TB, st core.Store, idle time.Duration) *System {
	t.Helper()
	chains := staticChains{core.RouteEvents: nil}
	sys, err := New(Options{Store: st, Chains: chains, Conversations: config.Conversations{IdleTimeout: idle}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, sys) })
	return sys
}

func shutdown(t testing.TB, sys *System) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sys.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func openBolt(t testing.TB, path string) *boltstore.Store {
	t.Helper()
	st, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func createConv(t testing.TB, sys *System) string {
	t.Helper()
	now := time.Now().UTC()
	c := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle, CreatedAt: now, UpdatedAt: now}
	if _, _, err := sys.CreateConversation(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

func post(t testing.TB, sys *System, id, text string) *core.Event {
	t.Helper()
	ev, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody(text))
	if err != nil {
		t.Fatalf("post event: %v", err)
	}
	return ev
}

func connect(t *testing.T, sys *System, id string, replay Replay) *fakeTransport {
	t.Helper()
	tr := newFakeTransport()
	sys.Connect(tr, &core.Principal{Subject: "tester"}, id, replay)
	return tr
}

func counts(t testing.TB, sys *System) *conversationsCounted {
	t.Helper()
	res, err := sys.root.RequestFuture(sys.registry, &countConversations{}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	return res.(*conversationsCounted)
}

// TestRestartResumesAfterID stops a System over a bolt file, starts another
// on the same file, and resumes with after_id: exactly the missed events,
// then live ones, with the IDs and Seq they had.
func TestRestartResumesAfterID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	st := openBolt(t, path)
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	var evs []*core.Event
	for i := range 20 {
		evs = append(evs, post(t, sys, id, fmt.Sprint(i)))
	}
	shutdown(t, sys)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openBolt(t, path)
	defer st.Close()
	sys = startSystem(t, st, 0)
	tr := connect(t, sys, id, Replay{Mode: ReplayAfterID, AfterID: evs[11].ID})
	more := post(t, sys, id, "after restart")
	if more.Seq != 21 {
		t.Fatalf("first event after restart has seq %d, want 21", more.Seq)
	}
	frames := tr.waitFrames(t, 1+8+1)
	for i, f := range frames[1:9] {
		if f["id"] != evs[12+i].ID {
			t.Fatalf("replayed event %d = %v, want %s", i, f["id"], evs[12+i].ID)
		}
	}
	if frames[9]["id"] != more.ID {
		t.Fatalf("live event = %v, want %s", frames[9]["id"], more.ID)
	}
	if c, err := st.Conversation(context.Background(), id); err != nil || !c.UpdatedAt.Equal(more.Timestamp) {
		t.Errorf("updated_at = %v (%v), want the last event's %s", c.UpdatedAt, err, more.Timestamp)
	}
}

// gatedStore holds every AppendBatch until released, and counts them.
type gatedStore struct {
	core.Store
	gate    chan struct{}
	entered chan struct{} // if set, gets a token (never blocking) as an AppendBatch reaches the gate
	waiting atomic.Int64  // events of the AppendBatch calls that reached the gate
	batches atomic.Int64
	events  atomic.Int64
	fail    atomic.Pointer[error]
}

func (g *gatedStore) AppendBatch(ctx context.Context, b []core.Append) []error {
	for _, a := range b {
		g.waiting.Add(int64(len(a.Events)))
	}
	if g.entered != nil {
		select {
		case g.entered <- struct{}{}:
		default:
		}
	}
	<-g.gate
	g.batches.Add(1)
	for _, a := range b {
		g.events.Add(int64(len(a.Events)))
	}
	if e := g.fail.Load(); e != nil {
		errs := make([]error, len(b))
		for i := range errs {
			errs[i] = *e
		}
		return errs
	}
	return g.Store.AppendBatch(ctx, b)
}

// TestEventIsDurableBeforeSeen: until the store has the event, no socket
// sees it and the post does not answer.
func TestEventIsDurableBeforeSeen(t *testing.T) {
	g := &gatedStore{Store: memstore.New(), gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	sys := startSystem(t, g, 0)
	id := createConv(t, sys)
	tr := connect(t, sys, id, Replay{})
	tr.waitFrames(t, 1)
	posted := make(chan *core.Event, 1)
	go func() {
		ev, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("x"))
		if err != nil {
			t.Error(err)
		}
		posted <- ev
	}()
	// The event has reached the store's AppendBatch, which holds it: from
	// here on, neither the post's answer nor the broadcast may have happened.
	select {
	case <-g.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the event never reached the store")
	}
	select {
	case <-posted:
		t.Fatal("post answered before the store had the event")
	default:
	}
	tr.mu.Lock()
	n := len(tr.frames)
	tr.mu.Unlock()
	if n != 1 {
		t.Fatalf("socket has %d frames before the event was stored, want 1", n)
	}
	close(g.gate)
	ev := <-posted
	if f := tr.waitFrames(t, 2)[1]; f["id"] != ev.ID {
		t.Fatalf("broadcast %v, want %s", f["id"], ev.ID)
	}
}

// TestGroupCommit: appends to many conversations made while one commit
// runs go into the next commit together.
func TestGroupCommit(t *testing.T) {
	g := &gatedStore{Store: memstore.New(), gate: make(chan struct{})}
	sys := startSystem(t, g, 0)
	const convs, per = 20, 10
	ids := make([]string, convs)
	for i := range ids {
		ids[i] = createConv(t, sys)
	}
	var wg sync.WaitGroup
	errs := make(chan error, convs*per)
	for _, id := range ids {
		for j := range per {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody(fmt.Sprint(j))); err != nil {
					errs <- fmt.Errorf("post event: %w", err)
				}
			}()
		}
	}
	// Wait until every event is either held at the gate (the first commit)
	// or queued behind it in the writer, so the rest must share a commit.
	queued := func() int64 {
		sys.writer.mu.Lock()
		defer sys.writer.mu.Unlock()
		return g.waiting.Load() + int64(len(sys.writer.queue))
	}
	for deadline := time.Now().Add(30 * time.Second); queued() != convs*per; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			close(g.gate)
			t.Fatalf("only %d of %d events reached the writer", queued(), convs*per)
		}
	}
	close(g.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := g.events.Load(); got != convs*per {
		t.Fatalf("stored %d events, want %d", got, convs*per)
	}
	if b := g.batches.Load(); b > 3 {
		t.Errorf("%d events took %d commits, want them grouped into very few", convs*per, b)
	}
	for _, id := range ids {
		if last, _ := g.LastSeq(context.Background(), id); last != per {
			t.Errorf("conversation %s has %d events, want %d", id, last, per)
		}
	}
}

// TestFailedWrite: a write that fails fails only the posts in it. When the
// store could not write (unreachable, or the write itself failed), the
// sockets stay open, get a full_state, and then the next event, which takes
// the Seq the failed one would have had: no gap, nothing torn. When the store refused the
// write because the log moved (a Seq conflict), the actor cannot go on: it
// closes its sockets with 1011, and the next post works from what the
// store holds.
func TestFailedWrite(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantClose bool
	}{
		{"write failed", errors.New("disk on fire"), false},
		{"store unavailable", fmt.Errorf("postgres: %w: connection refused", core.ErrUnavailable), false},
		{"the log moved", fmt.Errorf("seq 2: %w", core.ErrSeqConflict), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &gatedStore{Store: memstore.New(), gate: make(chan struct{})}
			close(g.gate)
			sys := startSystem(t, g, 0)
			id := createConv(t, sys)
			post(t, sys, id, "one")
			tr := connect(t, sys, id, Replay{})
			tr.waitFrames(t, 1)
			g.fail.Store(&tt.err)
			if _, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("two")); !errors.Is(err, tt.err) {
				t.Fatalf("post during failure: %v, want %v", err, tt.err)
			}
			if tt.wantClose {
				if d := tr.waitClosed(t); d != core.DisconnectInternalError {
					t.Fatalf("socket closed with %v, want 1011", d)
				}
			}
			g.fail.Store(nil)
			var ev *core.Event
			deadline := time.Now().Add(30 * time.Second)
			for {
				var err error
				if ev, err = sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("three")); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("post after recovery: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if ev.Seq != 2 {
				t.Fatalf("seq after a failed write = %d, want 2 (no gap, nothing torn)", ev.Seq)
			}
			if !tt.wantClose {
				// After the failure the socket gets a full_state (what any
				// lost state update would have said), then the next event.
				frames := tr.waitFrames(t, 3)
				if frames[1]["key"] != "full_state" || frames[2]["id"] != ev.ID {
					t.Fatalf("the open socket got %v then %v, want a full_state then the event after the failure", frames[1], frames[2])
				}
				if tr.isClosed() {
					t.Fatal("socket closed, want it open")
				}
			}
		})
	}
}

// TestFailedWriteOfManyInFlight: a failed commit fails every post in flight
// for the conversation, including those the writer still holds queued
// behind it; none of them lands, and the next posts continue the log
// without a gap.
func TestFailedWriteOfManyInFlight(t *testing.T) {
	g := &gatedStore{Store: memstore.New(), gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	sys := startSystem(t, g, 0)
	id := createConv(t, sys)
	boom := fmt.Errorf("postgres: %w", core.ErrUnavailable)
	g.fail.Store(&boom)
	const n = 20
	errs := make(chan error, n)
	go func() {
		_, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("first"))
		errs <- err
	}()
	<-g.entered // the first commit is at the gate; the rest queue behind it
	for i := 1; i < n; i++ {
		go func() {
			_, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("more"))
			errs <- err
		}()
	}
	for deadline := time.Now().Add(30 * time.Second); g.waiting.Load() < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no commit reached the store")
		}
	}
	time.Sleep(50 * time.Millisecond) // let the others reach the writer's queue
	close(g.gate)
	for range n {
		if err := <-errs; !errors.Is(err, core.ErrUnavailable) {
			t.Errorf("post in flight: %v, want ErrUnavailable", err)
		}
	}
	g.fail.Store(nil)
	for i := uint64(1); i <= 3; i++ {
		if ev := post(t, sys, id, "after"); ev.Seq != i {
			t.Fatalf("post %d after the failure has seq %d", i, ev.Seq)
		}
	}
}

// TestPassivation: an idle conversation actor stops while the registry
// still knows the conversation, and the next connection or post brings it
// back from the store, with its log intact.
func TestPassivation(t *testing.T) {
	st := openBolt(t, filepath.Join(t.TempDir(), "store.db"))
	defer st.Close()
	sys := startSystem(t, st, 50*time.Millisecond)
	id := createConv(t, sys)
	first := post(t, sys, id, "one")
	waitCounts(t, sys, 1, 0)

	// A socket keeps the actor running.
	tr := connect(t, sys, id, Replay{Mode: ReplayAll})
	if f := tr.waitFrames(t, 2)[1]; f["id"] != first.ID {
		t.Fatalf("replay after reactivation = %v, want %s", f["id"], first.ID)
	}
	if c := counts(t, sys); c.Active != 1 {
		t.Fatalf("active = %d with a socket attached, want 1", c.Active)
	}
	time.Sleep(200 * time.Millisecond)
	if c := counts(t, sys); c.Active != 1 {
		t.Fatalf("active = %d with a socket attached after the idle timeout, want 1", c.Active)
	}
	second := post(t, sys, id, "two")
	if second.Seq != 2 {
		t.Fatalf("seq = %d, want 2", second.Seq)
	}
	if f := tr.waitFrames(t, 3)[2]; f["id"] != second.ID {
		t.Fatalf("live = %v, want %s", f["id"], second.ID)
	}
	if tr.isClosed() {
		t.Fatal("socket closed")
	}
}

// TestClosesDuringAttachLetItPassivate: conversations do not watch their
// connections, so one that stops after its conversation subscribed it but
// before it heard so must still be detached, or the conversation would keep
// a dead subscriber and never passivate. lateTransport holds the
// conversation's full_state Send until the connection has closed it.
func TestClosesDuringAttachLetItPassivate(t *testing.T) {
	sys := startSystem(t, memstore.New(), 50*time.Millisecond)
	id := createConv(t, sys)
	for range 5 {
		tr := &lateTransport{fakeTransport: newFakeTransport(), gone: make(chan struct{})}
		sys.Connect(tr, &core.Principal{Subject: "tester"}, id, Replay{}).Closed()
		tr.waitClosed(t)
	}
	waitCounts(t, sys, 1, 0)
}

// lateTransport's first Send waits until Close and then succeeds, as if the
// frame had been queued just before the connection closed.
type lateTransport struct {
	*fakeTransport
	gone chan struct{}
	once sync.Once
	sent atomic.Bool
}

func (l *lateTransport) Send(frame []byte) bool {
	if l.sent.Swap(true) {
		return l.fakeTransport.Send(frame)
	}
	select {
	case <-l.gone:
	case <-time.After(10 * time.Second):
	}
	return true
}

func (l *lateTransport) Close(d core.Disconnect) {
	l.fakeTransport.Close(d)
	l.once.Do(func() { close(l.gone) })
}

func waitCounts(t *testing.T, sys *System, known, active int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := counts(t, sys)
		if c.Known == known && c.Active == active {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry knows %d, runs %d; want %d, %d", c.Known, c.Active, known, active)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUnknownConversationIsForgotten: a post to an unknown conversation
// fails with ErrNotFound and leaves nothing in the registry.
func TestUnknownConversationIsForgotten(t *testing.T) {
	sys := startSystem(t, memstore.New(), 0)
	if _, err := sys.PostEvent(context.Background(), core.NewID(), core.SourceAgent, core.KindMessage, messageBody("x")); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("post = %v, want ErrNotFound", err)
	}
	waitCounts(t, sys, 0, 0)
}

// TestDeleteRemovesEventsAndForgets deletes a conversation with events:
// the store has neither, the registry forgets it, and a post fails.
func TestDeleteRemovesEventsAndForgets(t *testing.T) {
	st := openBolt(t, filepath.Join(t.TempDir(), "store.db"))
	defer st.Close()
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	ev := post(t, sys, id, "x")
	if err := sys.DeleteConversation(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := st.EventByID(context.Background(), id, ev.ID); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("event after delete: %v, want ErrNotFound", err)
	}
	waitCounts(t, sys, 0, 0)
	if _, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("y")); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("post after delete = %v, want ErrNotFound", err)
	}
}

// hangingReadStore's reads that a replay makes hang until their context
// ends, as over a half-open database connection.
type hangingReadStore struct{ core.Store }

func (h hangingReadStore) Events(ctx context.Context, _ string, _ uint64, _ int) ([]*core.Event, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (h hangingReadStore) EventByID(ctx context.Context, _, _ string) (*core.Event, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestHungReplayReadClosesTheSocket: a replay whose store read hangs does
// not leave its socket open and silent: the read times out and the socket
// is closed with 1011, so its client reconnects.
func TestHungReplayReadClosesTheSocket(t *testing.T) {
	// Restored after the system's shutdown (cleanups run last first), not
	// while its goroutines may still read it.
	old := storeReadTimeout
	t.Cleanup(func() { storeReadTimeout = old })
	storeReadTimeout = 100 * time.Millisecond
	mem := memstore.New()
	sys := startSystem(t, hangingReadStore{mem}, 0)
	id := createConv(t, sys)
	first := post(t, sys, id, "one")
	for i := range tailEvents + 1 { // so that neither the lookup nor the first page is in the tail
		post(t, sys, id, fmt.Sprint(i))
	}
	tests := []struct {
		name   string
		replay Replay
	}{
		{"replay all (a page read hangs)", Replay{Mode: ReplayAll}},
		{"after_id (the lookup hangs)", Replay{Mode: ReplayAfterID, AfterID: first.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := connect(t, sys, id, tt.replay)
			if d := tr.waitClosed(t); d != core.DisconnectInternalError {
				t.Fatalf("socket closed with %v, want 1011", d)
			}
		})
	}
}
