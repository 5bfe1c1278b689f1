package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/actors/clusterpb"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/memstore"
)

// parentOf returns the stored parent_id of ev ("" for none).
func parentOf(t *testing.T, st core.Store, id string, ev *core.Event) string {
	t.Helper()
	stored, err := st.EventByID(context.Background(), id, ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := core.ParentOf(stored.Raw)
	return p
}

// headOf returns the conversation's stored HEAD.
func headOf(t *testing.T, st core.Store, id string) core.Head {
	t.Helper()
	c, err := st.Conversation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Head
}

// Every event names the HEAD as its parent; a state update does not move
// the HEAD; what a client receives is what is stored.
func TestEventsCarryParentID(t *testing.T) {
	h := newControlHarness(t, 0, time.Second)
	id := h.conversation(t)
	client, _ := h.connect(t, id, Replay{})
	a := h.post(t, id, "a")
	b := h.post(t, id, "b")
	policy := json.RawMessage(`{"kind":"AlwaysConfirm"}`)
	if err := h.sys.ChangeSettings(context.Background(), id, core.Settings{ConfirmationPolicy: policy}); err != nil {
		t.Fatal(err)
	}
	c := h.post(t, id, "c")
	update := framesWhere(t, client, 1, "the policy update", isStateUpdate(core.StateKeyConfirmationPolicy))[0]
	for _, tt := range []struct {
		name       string
		got, want  string
		wantHasKey bool
	}{
		{"the first event", parentOf(t, h.store, id, a), "", false},
		{"the second", parentOf(t, h.store, id, b), a.ID, true},
		{"the state update", update["parent_id"].(string), b.ID, true},
		{"the event after the state update", parentOf(t, h.store, id, c), b.ID, true},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: parent_id %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	frames := framesWhere(t, client, 3, "the messages", func(f map[string]any) bool { return f["kind"] == core.KindMessage })
	if _, ok := frames[0]["parent_id"]; ok || frames[1]["parent_id"] != a.ID || frames[2]["parent_id"] != b.ID {
		t.Errorf("broadcast parent_ids: %v %v %v", frames[0]["parent_id"], frames[1]["parent_id"], frames[2]["parent_id"])
	}
}

// navigate moves the HEAD (durable when it returns, sent to the runtime,
// not broadcast): the next event starts a branch there, or a new root
// after navigate to null.
func TestNavigate(t *testing.T) {
	h := newControlHarness(t, 0, time.Second)
	ctx := context.Background()
	id := h.conversation(t)
	client, _ := h.connect(t, id, Replay{})
	rt, _ := h.attachRuntime(t, id)
	a := h.post(t, id, "a")
	h.post(t, id, "b")
	if err := h.sys.Navigate(ctx, id, a.ID); err != nil {
		t.Fatal(err)
	}
	if got := headOf(t, h.store, id); got.LeafEventID != a.ID || got.Empty {
		t.Errorf("stored HEAD after navigate = %+v, want %s", got, a.ID)
	}
	framesWhere(t, rt, 1, "a state frame with the new HEAD", func(f map[string]any) bool {
		st, _ := f["state"].(map[string]any)
		return f["type"] == core.FrameTypeState && st["leaf_event_id"] == a.ID && st["head_is_empty"] == false
	})
	c := h.post(t, id, "c")
	if p := parentOf(t, h.store, id, c); p != a.ID {
		t.Errorf("after navigate to a: parent_id %q, want %s", p, a.ID)
	}
	if err := h.sys.Navigate(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if got := headOf(t, h.store, id); got.LeafEventID != "" || !got.Empty {
		t.Errorf("stored HEAD after navigate to null = %+v, want empty", got)
	}
	d := h.post(t, id, "d")
	e := h.post(t, id, "e")
	if p := parentOf(t, h.store, id, d); p != core.RootParentID {
		t.Errorf("after navigate to null: parent_id %q, want %s", p, core.RootParentID)
	}
	if p := parentOf(t, h.store, id, e); p != d.ID {
		t.Errorf("the event after the new root: parent_id %q, want %s", p, d.ID)
	}
	var unknown *core.UnknownEventError
	if err := h.sys.Navigate(ctx, id, core.NewID()); !errors.As(err, &unknown) || unknown.Field != "event_id" {
		t.Errorf("navigate to an unknown event: %v, want an UnknownEventError", err)
	}
	if err := h.sys.Navigate(ctx, core.NewID(), a.ID); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("navigate an unknown conversation: %v, want ErrNotFound", err)
	}
	if err := h.sys.Navigate(ctx, core.NewID(), ""); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("navigate an unknown conversation to null: %v, want ErrNotFound", err)
	}
	client.mu.Lock()
	defer client.mu.Unlock()
	for _, b := range client.frames {
		var f map[string]any
		if json.Unmarshal(b, &f) == nil && f["kind"] != core.KindMessage && f["key"] != core.StateKeyFullState {
			t.Errorf("a client got %s, want only the messages: navigate is not broadcast", b)
		}
	}
}

// A new actor on the same store (after a restart, or passivation) goes on
// from the HEAD: the one navigate recorded, or the one the log's tail says.
func TestHeadSurvivesANewActor(t *testing.T) {
	st := memstore.New()
	ctx := context.Background()
	restart := func(sys *System) *System {
		shutdown(t, sys)
		return startSystem(t, st, 0)
	}
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	a := post(t, sys, id, "a")
	b := post(t, sys, id, "b")
	sys = restart(sys)
	c := post(t, sys, id, "c")
	if p := parentOf(t, st, id, c); p != b.ID {
		t.Errorf("after a restart: parent_id %q, want the last event %s", p, b.ID)
	}
	if err := sys.Navigate(ctx, id, a.ID); err != nil {
		t.Fatal(err)
	}
	sys = restart(sys)
	d := post(t, sys, id, "d")
	if p := parentOf(t, st, id, d); p != a.ID {
		t.Errorf("after navigate and a restart: parent_id %q, want %s", p, a.ID)
	}
	if err := sys.Navigate(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	sys = restart(sys)
	e := post(t, sys, id, "e")
	if p := parentOf(t, st, id, e); p != core.RootParentID {
		t.Errorf("after navigate to null and a restart: parent_id %q, want %s", p, core.RootParentID)
	}
}

// A runtime's parent_id is kept on a tree node, which becomes the HEAD; a
// state update, which is no tree node, gets the HEAD whatever parent_id it
// was published with, so that a new actor reads from it the HEAD the live
// one had.
func TestPublishedParentID(t *testing.T) {
	for _, tt := range []struct {
		name  string
		event string // "A": the first post's ID
		// wantParent is the published event's parent_id, wantNext that of
		// the first post after a restart, by name: "a" and "b" the two
		// posts before, "pub" the published event.
		wantParent, wantNext string
	}{
		{"a state update naming an older event", `{"kind":"ConversationStateUpdateEvent","key":"agent_state","value":{"k":1},"parent_id":"A"}`, "b", "b"},
		{"a state update naming a new root", `{"kind":"ConversationStateUpdateEvent","key":"agent_state","value":{"k":1},"parent_id":"__root__"}`, "b", "b"},
		{"a state update naming no event", `{"kind":"ConversationStateUpdateEvent","key":"agent_state","value":{"k":1},"parent_id":"nowhere"}`, "b", "b"},
		{"a state update without parent_id", `{"kind":"ConversationStateUpdateEvent","key":"agent_state","value":{"k":1}}`, "b", "b"},
		{"a tree node naming an older event", `{"kind":"PauseEvent","parent_id":"A"}`, "a", "pub"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := memstore.New()
			sys := startSystem(t, st, 0)
			id := createConv(t, sys)
			a := post(t, sys, id, "a")
			b := post(t, sys, id, "b")
			p, err := core.ParsePublished([]byte(strings.ReplaceAll(tt.event, `"A"`, strconv.Quote(a.ID))))
			if err != nil {
				t.Fatal(err)
			}
			pub, err := sys.PublishEvent(context.Background(), id, p)
			if err != nil {
				t.Fatal(err)
			}
			ids := map[string]string{"a": a.ID, "b": b.ID, "pub": pub.ID}
			if got := parentOf(t, st, id, pub); got != ids[tt.wantParent] {
				t.Errorf("the published event's parent_id %q, want %s's %s", got, tt.wantParent, ids[tt.wantParent])
			}
			shutdown(t, sys)
			sys = startSystem(t, st, 0)
			next := post(t, sys, id, "after a restart")
			if got := parentOf(t, st, id, next); got != ids[tt.wantNext] {
				t.Errorf("after a restart, the next post's parent_id %q, want %s's %s", got, tt.wantNext, ids[tt.wantNext])
			}
		})
	}
}

// An event whose write failed is not the HEAD: the next one's parent is
// the last stored event.
func TestHeadAfterAFailedWrite(t *testing.T) {
	g := &gatedStore{Store: memstore.New(), gate: make(chan struct{})}
	close(g.gate)
	sys := startSystem(t, g, 0)
	id := createConv(t, sys)
	a := post(t, sys, id, "a")
	fail := fmt.Errorf("disk full: %w", core.ErrUnavailable)
	g.fail.Store(&fail)
	if _, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("lost")); err == nil {
		t.Fatal("a post whose write failed succeeded")
	}
	g.fail.Store(nil)
	c := post(t, sys, id, "c")
	if p := parentOf(t, g, id, c); p != a.ID {
		t.Errorf("after a failed write: parent_id %q, want %s", p, a.ID)
	}
}

// heldWrite is a Store whose next AppendBatch after hold waits for the
// test to let it go, then stores its batch or fails it.
type heldWrite struct {
	core.Store
	next    atomic.Pointer[chan error]
	entered chan struct{} // a token as the held AppendBatch starts waiting
}

// hold makes the next AppendBatch wait until release, which fails it with
// err (nil stores it).
func (s *heldWrite) hold() (release func(err error)) {
	ch := make(chan error, 1)
	s.next.Store(&ch)
	return func(err error) { ch <- err }
}

func (s *heldWrite) AppendBatch(ctx context.Context, b []core.Append) []error {
	if ch := s.next.Swap(nil); ch != nil {
		s.entered <- struct{}{}
		if err := <-*ch; err != nil {
			errs := make([]error, len(b))
			for i := range errs {
				errs[i] = err
			}
			return errs
		}
	}
	return s.Store.AppendBatch(ctx, b)
}

// A navigate that comes while an append is in flight waits for it: the Seq
// its HEAD records is durable, whether that write succeeds or fails, and
// the navigate succeeds either way; the post sent after the navigate waits
// behind it and starts the new branch. Before, a failed write failed the
// navigate and dropped the runtime's state frame while the new HEAD stayed,
// and the stored HEAD counted a Seq that the next post took again, so that
// a new actor went back to the navigated event and orphaned that post.
func TestNavigateWaitsForTheAppendsBeforeIt(t *testing.T) {
	for _, tt := range []struct {
		name     string
		writeErr error  // the in-flight write's outcome
		headSeq  uint64 // the Seq the stored HEAD records
	}{
		{"the write in flight fails", fmt.Errorf("disk full: %w", core.ErrUnavailable), 2},
		{"the write in flight is stored", nil, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			mem := memstore.New()
			st := &heldWrite{Store: mem, entered: make(chan struct{}, 1)}
			sys, err := New(Options{Store: st, Chains: staticChains{}, Conversations: config.Conversations{IdleTimeout: time.Minute}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { shutdown(t, sys) })
			h := &harness{sys: sys, store: mem}
			id := createConv(t, sys)
			rt, _ := h.attachRuntime(t, id)
			a := post(t, sys, id, "a")
			b := post(t, sys, id, "b")

			release := st.hold()
			inFlight := make(chan error, 1)
			go func() {
				_, err := sys.PostEvent(ctx, id, core.SourceAgent, core.KindMessage, messageBody("in flight"))
				inFlight <- err
			}()
			<-st.entered
			// The registry hands these to the actor in order, before the
			// writer's report: counts returns once it did.
			nav := sys.root.RequestFuture(sys.registry, &navigateConversation{ConversationID: id, EventID: a.ID}, 10*time.Second)
			after := sys.root.RequestFuture(sys.registry, &appendEvent{ConversationID: id, Source: core.SourceAgent, Kind: core.KindMessage, Body: messageBody("after")}, 10*time.Second)
			counts(t, sys)
			release(tt.writeErr)

			if err := <-inFlight; (err != nil) != (tt.writeErr != nil) {
				t.Errorf("the post in flight: %v, want an error: %v", err, tt.writeErr != nil)
			}
			if res, err := nav.Result(); err != nil || !isDone(res) {
				t.Errorf("navigate answered %#v, %v; want done", res, err)
			}
			res, err := after.Result()
			appended, ok := res.(*eventAppended)
			if err != nil || !ok {
				t.Fatalf("the post after the navigate answered %#v, %v; want appended", res, err)
			}
			if p := parentOf(t, st, id, appended.Event); p != a.ID {
				t.Errorf("the post after the navigate: parent_id %q, want %s", p, a.ID)
			}
			if got, want := headOf(t, st, id), (core.Head{LeafEventID: a.ID, Seq: tt.headSeq}); got != want {
				t.Errorf("stored HEAD %+v, want %+v", got, want)
			}
			framesWhere(t, rt, 1, "a state frame with the new HEAD", func(f map[string]any) bool {
				st, _ := f["state"].(map[string]any)
				return f["type"] == core.FrameTypeState && st["leaf_event_id"] == a.ID
			})
			if tt.writeErr == nil {
				evs, _ := st.Events(ctx, id, 2, 1)
				if p := parentOf(t, st, id, evs[0]); p != b.ID {
					t.Errorf("the post in flight: parent_id %q, want %s", p, b.ID)
				}
			}

			shutdown(t, sys)
			sys = startSystem(t, st, 0)
			next := post(t, sys, id, "after a restart")
			if p := parentOf(t, st, id, next); p != appended.Event.ID {
				t.Errorf("after a restart: parent_id %q, want the post after the navigate %s", p, appended.Event.ID)
			}
		})
	}
}

// A delete does not wait behind a navigate that waits for an append: it
// is answered as done, and the navigate, refused, as the conversation is
// gone.
func TestDeleteWhileANavigateWaits(t *testing.T) {
	ctx := context.Background()
	st := &heldWrite{Store: memstore.New(), entered: make(chan struct{}, 1)}
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	a := post(t, sys, id, "a")
	release := st.hold()
	defer release(nil)
	go func() { _, _ = sys.PostEvent(ctx, id, core.SourceAgent, core.KindMessage, messageBody("in flight")) }()
	<-st.entered
	nav := sys.root.RequestFuture(sys.registry, &navigateConversation{ConversationID: id, EventID: a.ID}, 10*time.Second)
	counts(t, sys)
	if err := sys.DeleteConversation(ctx, id); err != nil {
		t.Errorf("delete while a navigate waits: %v", err)
	}
	res, err := nav.Result()
	if failed, ok := res.(*commandFailed); err != nil || !ok || !errors.Is(failed.Err, core.ErrNotFound) {
		t.Errorf("the navigate answered %#v, %v; want it failed with ErrNotFound", res, err)
	}
}

func isDone(res any) bool {
	_, ok := res.(*commandDone)
	return ok
}

// A fork copies the source's events under their IDs (the whole log, or a
// branch), takes its HEAD, and lives on by itself; its failures are typed.
func TestForkConversation(t *testing.T) {
	st := memstore.New()
	sys, err := New(Options{Store: st, Chains: staticChains{}, Conversations: config.Conversations{MaxForkEvents: 5}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, sys) })
	ctx := context.Background()
	src := createConv(t, sys)
	a := post(t, sys, src, "a")
	b := post(t, sys, src, "b")
	if err := sys.Navigate(ctx, src, a.ID); err != nil {
		t.Fatal(err)
	}
	c := post(t, sys, src, "c") // a branch beside b

	whole, err := sys.ForkConversation(ctx, src, core.ForkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if whole.ForkedFromConversationID != src || whole.ForkedFromEventID != "" || whole.Head.LeafEventID != c.ID {
		t.Errorf("whole fork = %+v, want forked from %s with the source's HEAD %s", whole, src, c.ID)
	}
	evs, _ := st.Events(ctx, whole.ID, 0, 0)
	if len(evs) != 3 || evs[0].ID != a.ID || evs[1].ID != b.ID || evs[2].ID != c.ID {
		t.Errorf("whole fork holds %v, want a, b, c", evs)
	}
	d := post(t, sys, whole.ID, "d")
	if d.Seq != 4 || parentOf(t, st, whole.ID, d) != c.ID {
		t.Errorf("the fork's own event: seq %d, parent %q; want 4 and %s", d.Seq, parentOf(t, st, whole.ID, d), c.ID)
	}
	if last, _ := st.LastSeq(ctx, src); last != 3 {
		t.Errorf("the source's log ends at %d, want 3: the fork's events are its own", last)
	}

	title := "B"
	branch, err := sys.ForkConversation(ctx, src, core.ForkRequest{ID: core.NewID(), FromEventID: b.ID, Title: &title})
	if err != nil {
		t.Fatal(err)
	}
	evs, _ = st.Events(ctx, branch.ID, 0, 0)
	if len(evs) != 2 || evs[0].ID != a.ID || evs[1].ID != b.ID || branch.Head.LeafEventID != b.ID || branch.ForkedFromEventID != b.ID ||
		branch.Title != "B" || branch.Tags["title"] != "B" {
		t.Errorf("branch fork = %+v holding %v, want a and b, its HEAD b", branch, evs)
	}
	e := post(t, sys, branch.ID, "e")
	if e.Seq != 3 || parentOf(t, st, branch.ID, e) != b.ID {
		t.Errorf("the branch's own event: seq %d, parent %q; want 3 and %s", e.Seq, parentOf(t, st, branch.ID, e), b.ID)
	}

	var unknown *core.UnknownEventError
	var tooLarge *core.ForkTooLargeError
	for i := range 3 {
		post(t, sys, src, fmt.Sprint("more ", i))
	}
	last := post(t, sys, src, "the sixth on its branch")
	for i := range 2 * core.BranchReach {
		post(t, sys, src, fmt.Sprint("spread ", i))
	}
	if err := sys.Navigate(ctx, src, a.ID); err != nil {
		t.Fatal(err)
	}
	far := post(t, sys, src, "a branch of two, its root 11 events back")
	for _, tt := range []struct {
		name  string
		src   string
		req   core.ForkRequest
		check func(error) bool
	}{
		{"an unknown source", core.NewID(), core.ForkRequest{}, func(err error) bool { return errors.Is(err, core.ErrNotFound) }},
		{"an unknown event", src, core.ForkRequest{FromEventID: "nope"}, func(err error) bool { return errors.As(err, &unknown) && unknown.Field == "from_event_id" }},
		{"a taken id", src, core.ForkRequest{ID: whole.ID, FromEventID: a.ID}, func(err error) bool { return errors.Is(err, core.ErrConversationExists) }},
		{"too many events", src, core.ForkRequest{}, func(err error) bool { return errors.As(err, &tooLarge) && tooLarge.Events == 12 && tooLarge.Max == 5 }},
		{"too long a branch", src, core.ForkRequest{FromEventID: last.ID}, func(err error) bool {
			return errors.As(err, &tooLarge) && tooLarge.Error() == "the fork would copy or read more than 5 events; at most 5 may be (conversations.max_fork_events)"
		}},
		{"a short branch whose root is past the reach", src, core.ForkRequest{FromEventID: far.ID}, func(err error) bool {
			return errors.As(err, &tooLarge) && tooLarge.Max == 5
		}},
	} {
		if _, err := sys.ForkConversation(ctx, tt.src, tt.req); !tt.check(err) {
			t.Errorf("%s: err = %v", tt.name, err)
		}
	}
	all, _ := st.Conversations(ctx)
	if len(all) != 3 {
		t.Errorf("%d conversations stored, want the source and two forks", len(all))
	}
}

// The wire carries navigate and a runtime's parent_id to the owner.
func TestWireTreeMessages(t *testing.T) {
	for _, m := range []addressed{
		&navigateConversation{ConversationID: "c", EventID: "e"},
		&navigateConversation{ConversationID: "c"},
		&publishEvent{ConversationID: "c", Ref: "r", Event: &core.Published{Source: core.SourceAgent, Kind: "PauseEvent", ParentID: "p", Body: []byte(`{}`)}},
	} {
		msg, err := toOwner(m, false)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		back := msg.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(b, back); err != nil {
			t.Fatal(err)
		}
		if got, ok := fromRemote("c", back); !ok || !reflect.DeepEqual(got, m) {
			t.Errorf("%T over the wire = %#v, want %#v", m, got, m)
		}
	}
}

// Errors cross the wire by class and come back as what they were: the
// sentinels (wrapped ones with their message), the typed errors with their
// fields, anything else as its message.
func TestErrorsCrossTheWire(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want error // errors.Is must find it; nil: the text comes back alone
		text string
	}{
		{"fenced", fmt.Errorf("append c1: %w", core.ErrFenced), core.ErrFenced, "append c1: " + core.ErrFenced.Error() + ": " + core.ErrFenced.Error()},
		{"not found", fmt.Errorf("conversation c1: %w", core.ErrNotFound), core.ErrNotFound, "conversation c1: " + core.ErrNotFound.Error() + ": " + core.ErrNotFound.Error()},
		{"unavailable", fmt.Errorf("pg: %w", core.ErrUnavailable), core.ErrUnavailable, "pg: " + core.ErrUnavailable.Error() + ": " + core.ErrUnavailable.Error()},
		{"already running", fmt.Errorf("run: %w", core.ErrAlreadyRunning), core.ErrAlreadyRunning, core.ErrAlreadyRunning.Error()},
		{"runtime lost", core.ErrRuntimeLost, core.ErrRuntimeLost, core.ErrRuntimeLost.Error()},
		{"key reused", core.ErrKeyReused, core.ErrKeyReused, core.ErrKeyReused.Error()},
		{"shutdown", ErrShutdown, ErrShutdown, ErrShutdown.Error()},
		{"anything else", errors.New("disk on fire"), nil, "disk on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeError(encodeError(tt.err))
			if tt.want != nil && !errors.Is(got, tt.want) {
				t.Errorf("decoded %v, which is not %v", got, tt.want)
			}
			if got.Error() != tt.text {
				t.Errorf("decoded %q, want %q", got, tt.text)
			}
		})
	}
	tooLarge := &core.EventTooLargeError{Kind: "MessageEvent", Size: 2 << 20, Max: 1 << 20}
	var back *core.EventTooLargeError
	if got := decodeError(encodeError(tooLarge)); !errors.As(got, &back) || *back != *tooLarge {
		t.Errorf("decoded %v, want %v", got, tooLarge)
	}
}

// ownerOnANode is a cluster activation (placement.go) on a single-node
// System: the conversation's identity is given, not the cluster's, and it
// loads as a local actor does, without an epoch.
type ownerOnANode struct{ *clusterActivation }

func (ownerOnANode) start(actor.Context, *conversation) {}

func (ownerOnANode) load(store core.Store, id string) *conversationLoaded {
	return local{}.load(store, id)
}

// gatedDeletes holds DeleteConversation until release is closed.
type gatedDeletes struct {
	*gatedStore
	deleting chan struct{} // closed as the delete reaches the gate
	release  chan struct{}
}

func (g *gatedDeletes) DeleteConversation(ctx context.Context, id string) error {
	close(g.deleting)
	<-g.release
	return g.gatedStore.DeleteConversation(ctx, id)
}

// A cluster delete is not held behind a navigate that waits for an append
// (heldForNavigate), whichever came first: the owner deletes the
// conversation from the store, closes the sockets (here one of its own and
// a relay's) with 4004 and answers, while the append is still on its way to
// the store. The navigate is refused: the conversation is gone.
func TestClusterDeleteGoesPastAHeldNavigate(t *testing.T) {
	for _, tt := range []struct {
		name          string
		navigateFirst bool
	}{
		{"delete, then a navigate while the store deletes", false},
		{"a navigate, then the delete", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &gatedDeletes{
				gatedStore: &gatedStore{Store: memstore.New(), gate: make(chan struct{}), entered: make(chan struct{}, 1)},
				deleting:   make(chan struct{}),
				release:    make(chan struct{}),
			}
			sys := startSystem(t, st, 0)
			t.Cleanup(func() { close(st.gate) }) // before the System's shutdown, which flushes the writer
			id := createConv(t, sys)
			owner := sys.root.Spawn(actor.PropsFromProducer(func() actor.Actor {
				return newConversation(sys, id, ownerOnANode{&clusterActivation{}})
			}))
			t.Cleanup(func() { _ = sys.root.StopFuture(owner).Wait() })
			request := func(msg any) *actor.Future { return sys.root.RequestFuture(owner, msg, 30*time.Second) }

			conn, _ := inbox(t, sys)
			socket := newFakeTransport()
			sys.root.Send(owner, &attachConnection{ConversationID: id, Conn: conn, Transport: socket})
			relay, relayGot := inbox(t, sys)
			if _, err := request(&clusterpb.Subscribe{Relay: refOf(relay)}).Result(); err != nil {
				t.Fatalf("subscribe a relay: %v", err)
			}
			posted := request(&appendEvent{ConversationID: id, Source: core.SourceAgent, Kind: core.KindMessage, Body: messageBody("x")})
			select {
			case <-st.entered: // the append is pending: a navigate now waits for it
			case <-time.After(10 * time.Second):
				t.Fatal("the append never reached the store")
			}
			var deleted, navigated *actor.Future
			if tt.navigateFirst {
				navigated = request(&navigateConversation{ConversationID: id})
				deleted = request(&clusterpb.Delete{})
				close(st.release)
			} else {
				deleted = request(&clusterpb.Delete{})
				<-st.deleting
				navigated = request(&navigateConversation{ConversationID: id}) // before ownerDeleted, in the mailbox
				close(st.release)
			}

			res, err := deleted.Result()
			if r, ok := res.(*clusterpb.Result); err != nil || !ok || r.Error != nil {
				t.Fatalf("delete answered %v (%v), want an empty Result while an append is pending", res, err)
			}
			if got := socket.waitClosed(t); got != core.DisconnectNotFound {
				t.Errorf("the owner's socket closed with %+v, want %+v", got, core.DisconnectNotFound)
			}
			select {
			case m := <-relayGot:
				if c, ok := m.(*clusterpb.Closing); !ok || c.Code != core.CloseConversationNotFnd {
					t.Errorf("the relay got %v, want Closing with %d", m, core.CloseConversationNotFnd)
				}
			case <-time.After(10 * time.Second):
				t.Error("the relay was never told the conversation was deleted")
			}
			if res, err := navigated.Result(); err != nil || !errors.Is(answerErr(res), core.ErrNotFound) {
				t.Errorf("the held navigate answered %v (%v), want not found", res, err)
			}
			if _, err := st.Conversation(context.Background(), id); !errors.Is(err, core.ErrNotFound) {
				t.Errorf("the store still has the conversation: %v", err)
			}
			if res, err := posted.Result(); err != nil || !errors.Is(answerErr(res), errStoppedUnconfirmed) {
				t.Errorf("the pending append answered %v (%v), want it failed as unconfirmed as the owner stopped", res, err)
			}
		})
	}
}

// answerErr is the error an actor's answer carries, nil for none.
func answerErr(res any) error {
	if f, ok := res.(*commandFailed); ok {
		return f.Err
	}
	return nil
}

// A runtime may publish a tree node whose parent_id names no event of the
// log. A fork from it, or from its child, copies the branch from it as its
// root, in a log longer than max_fork_events reaches as in a short one.
// Before, the long log made it a *core.ForkTooLargeError (REST: 400, "the
// fork would copy or read more than 3 events") for a branch of two.
func TestForkFromAnEventWhoseParentIsNotInALongLog(t *testing.T) {
	st := memstore.New()
	sys, err := New(Options{Store: st, Chains: staticChains{}, Conversations: config.Conversations{MaxForkEvents: 3}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, sys) })
	ctx := context.Background()
	src := createConv(t, sys)
	for i := range 10 { // more than BranchReach*3 events before the branch
		post(t, sys, src, fmt.Sprint("before ", i))
	}
	p, err := core.ParsePublished([]byte(`{"kind":"PauseEvent","parent_id":"nowhere"}`))
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := sys.PublishEvent(ctx, src, p)
	if err != nil {
		t.Fatal(err)
	}
	child := post(t, sys, src, "after the orphan")
	fork, err := sys.ForkConversation(ctx, src, core.ForkRequest{FromEventID: child.ID})
	if err != nil {
		t.Fatalf("ForkConversation: %v, want the branch of two from the orphan", err)
	}
	evs, _ := st.Events(ctx, fork.ID, 0, 0)
	if len(evs) != 2 || evs[0].ID != orphan.ID || evs[1].ID != child.ID {
		t.Errorf("the fork holds %v, want the orphan and its child", evs)
	}
}
