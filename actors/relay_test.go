package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/actors/clusterpb"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/memstore"
)

// These tests run a relay (relay.go) on a single-node System, with the
// owner's side played by the test: fakeOwners answers the relay's calls,
// and inbox actors stand for the owner activations and the connections.

// fakeOwners answers a relay's calls to its owner. Each Subscribe takes
// the next answer the test puts in subscribed; an AttachRuntime is
// accepted at once.
type fakeOwners struct {
	subscribed chan *clusterpb.Subscribed
	asked      chan struct{} // a token per Subscribe call, as it arrives
	done       chan struct{} // closed at cleanup: calls still waiting give up
}

func newFakeOwners(t *testing.T) *fakeOwners {
	f := &fakeOwners{subscribed: make(chan *clusterpb.Subscribed, 8), asked: make(chan struct{}, 8), done: make(chan struct{})}
	t.Cleanup(func() { close(f.done) })
	return f
}

func (f *fakeOwners) call(ctx context.Context, _ string, msg func(bool) proto.Message) (any, error) {
	switch msg(false).(type) {
	case *clusterpb.Subscribe:
		f.asked <- struct{}{}
		select {
		case s := <-f.subscribed:
			if s == nil { // the test's way to fail a call
				return nil, errors.New("the owner did not answer")
			}
			return s, nil
		case <-f.done:
		case <-ctx.Done():
		}
		return nil, context.Canceled
	case *clusterpb.AttachRuntime:
		return &clusterpb.Result{}, nil
	}
	return nil, context.Canceled
}

// waitAsked waits for the relay's next Subscribe call.
func (f *fakeOwners) waitAsked(t *testing.T) {
	t.Helper()
	select {
	case <-f.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay never called Subscribe")
	}
}

// inbox is an actor that passes every message it gets to a channel.
func inbox(t *testing.T, sys *System) (*actor.PID, chan any) {
	t.Helper()
	ch := make(chan any, 64)
	pid := sys.root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch ctx.Message().(type) {
		case actor.SystemMessage, actor.AutoReceiveMessage:
		default:
			select {
			case ch <- ctx.Message():
			default:
			}
		}
	}))
	t.Cleanup(func() { _ = sys.root.StopFuture(pid).Wait() })
	return pid, ch
}

// startRelay spawns conversation id's relay, reaching its owner through
// owners, stopped at cleanup.
func startRelay(t *testing.T, sys *System, id string, owners ownerCaller) *actor.PID {
	t.Helper()
	r := newRelay(sys, id)
	r.owners = owners
	pid := sys.root.Spawn(actor.PropsFromProducer(func() actor.Actor { return r }))
	t.Cleanup(func() { _ = sys.root.StopFuture(pid).Wait() })
	return pid
}

// relaySocket attaches a client socket (no replay) to the relay.
func relaySocket(t *testing.T, sys *System, relay *actor.PID, id string) *fakeTransport {
	t.Helper()
	conn, _ := inbox(t, sys)
	tr := newFakeTransport()
	sys.root.Send(relay, &attachConnection{ConversationID: id, Conn: conn, Transport: tr})
	return tr
}

// stateOf is the conversation's full_state body, as an owner sends it.
func stateOf(t *testing.T, st core.Store, id string) []byte {
	t.Helper()
	conv, err := st.Conversation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	body, err := core.StateBody(core.StateKeyFullState, conv.FullState())
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// eventsOf is what an owner sends a relay for evs.
func eventsOf(evs ...*core.Event) *clusterpb.Events {
	m := &clusterpb.Events{}
	for _, ev := range evs {
		m.Events = append(m.Events, &clusterpb.Event{Seq: ev.Seq, Raw: ev.Raw, Id: ev.ID})
	}
	return m
}

// eventsOfOlderNode is eventsOf as a node from before events carried
// their ID sends them.
func eventsOfOlderNode(evs ...*core.Event) *clusterpb.Events {
	m := eventsOf(evs...)
	for _, e := range m.Events {
		e.Id = ""
	}
	return m
}

// wantIDs checks that frames after the full_state are evs, in order.
func wantIDs(t *testing.T, tr *fakeTransport, evs []*core.Event) {
	t.Helper()
	frames := tr.waitFrames(t, 1+len(evs))
	if len(frames) != 1+len(evs) {
		t.Fatalf("socket got %d frames, want the full_state and %d events", len(frames), len(evs))
	}
	if frames[0]["kind"] != core.KindStateUpdate {
		t.Fatalf("first frame = %v, want the full_state", frames[0])
	}
	for i, ev := range evs {
		if got := frames[1+i]["id"]; got != ev.ID {
			t.Fatalf("event %d on the socket = %v, want %s (seq %d)", i, got, ev.ID, ev.Seq)
		}
	}
}

// readLog records the reads of a conversation's log made of a store: the
// pages (Events) and the lookups by ID (EventByID).
type readLog struct {
	core.Store
	mu     sync.Mutex
	limits []int // each page read's limit, since the last reset
	byID   int   // lookups by ID, since the last reset
}

func (s *readLog) EventByID(ctx context.Context, id, eventID string) (*core.Event, error) {
	s.mu.Lock()
	s.byID++
	s.mu.Unlock()
	return s.Store.EventByID(ctx, id, eventID)
}

// pages returns how many page reads were made.
func (s *readLog) pages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.limits)
}

// lookups returns how many lookups by ID were made.
func (s *readLog) lookups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID
}

// readCount returns how many reads of either kind were made.
func (s *readLog) readCount() int { return s.pages() + s.lookups() }

func (s *readLog) Events(ctx context.Context, id string, afterSeq uint64, limit int) ([]*core.Event, error) {
	s.mu.Lock()
	s.limits = append(s.limits, limit)
	s.mu.Unlock()
	return s.Store.Events(ctx, id, afterSeq, limit)
}

func (s *readLog) reads() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.limits...)
}

func (s *readLog) reset() {
	s.mu.Lock()
	s.limits, s.byID = nil, 0
	s.mu.Unlock()
}

// seeded is a System over a readLog with one conversation of n events,
// its reads forgotten.
func seeded(t *testing.T, n int) (*System, *readLog, string, []*core.Event) {
	t.Helper()
	st := &readLog{Store: memstore.New()}
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	evs := make([]*core.Event, n)
	for i := range evs {
		evs[i] = post(t, sys, id, "m")
	}
	st.reset()
	return sys, st, id, evs
}

// TestRelayEventsBeforeFirstSubscribed: events that reach a new relay
// before the owner's answer to its first Subscribe (the owner registers
// the relay as it answers) wait for that answer, which says where the log
// the relay follows starts. The relay reads nothing of the log before it:
// it used to take such an event as a gap from Seq 1 and read the whole log
// at once.
func TestRelayEventsBeforeFirstSubscribed(t *testing.T) {
	sys, st, id, evs := seeded(t, replayPage+45)
	owners := newFakeOwners(t)
	owner, _ := inbox(t, sys)
	relay := startRelay(t, sys, id, owners)
	owners.waitAsked(t)
	tr := relaySocket(t, sys, relay, id) // waits for the subscription
	last := evs[len(evs)-1]
	sys.root.Send(relay, eventsOf(last))
	owners.subscribed <- &clusterpb.Subscribed{Durable: last.Seq - 1, State: stateOf(t, st, id), Owner: refOf(owner)}

	wantIDs(t, tr, []*core.Event{last})
	if got := st.reads(); len(got) != 0 {
		t.Errorf("the relay read the store %d times (limits %v), want none: the owner said where the log was durable", len(got), got)
	}
}

// TestRelayReadsAGapAPageAtATime: a relay that misses many events reads
// them from the store a replayPage at a time, as replays do, and its
// socket gets every one, in order, then what came past the gap.
func TestRelayReadsAGapAPageAtATime(t *testing.T) {
	sys, st, id, evs := seeded(t, 2*replayPage+10)
	owners := newFakeOwners(t)
	owner, _ := inbox(t, sys)
	relay := startRelay(t, sys, id, owners)
	owners.waitAsked(t)
	owners.subscribed <- &clusterpb.Subscribed{Durable: 0, State: stateOf(t, st, id), Owner: refOf(owner)}
	tr := relaySocket(t, sys, relay, id)
	tr.waitFrames(t, 1)
	sys.root.Send(relay, eventsOf(evs[len(evs)-1])) // all before it were missed

	wantIDs(t, tr, evs)
	reads := st.reads()
	if len(reads) < 3 {
		t.Errorf("the gap of %d events took %d reads (limits %v), want pages of at most %d", len(evs)-1, len(reads), reads, replayPage)
	}
	for _, n := range reads {
		if n <= 0 || n > replayPage {
			t.Errorf("a read of the gap asked for %d events (limits %v), want 1 to %d", n, reads, replayPage)
		}
	}
}

// subscribedTwice starts a relay with a socket that subscribes to the
// owner a, calls before (when not nil), then renews its lease and finds
// the owner b. It returns once a was told the relay left (Unsubscribe).
func subscribedTwice(t *testing.T, sys *System, st core.Store, id string, owners *fakeOwners, before func(relay *actor.PID)) (relay, a, b *actor.PID, tr *fakeTransport) {
	t.Helper()
	a, aGot := inbox(t, sys)
	b, _ = inbox(t, sys)
	relay = startRelay(t, sys, id, owners)
	owners.waitAsked(t)
	owners.subscribed <- &clusterpb.Subscribed{Durable: 0, State: stateOf(t, st, id), Owner: refOf(a)}
	tr = relaySocket(t, sys, relay, id)
	tr.waitFrames(t, 1)
	if before != nil {
		before(relay)
	}

	sys.root.Send(relay, &renewSubscription{})
	owners.waitAsked(t)
	owners.subscribed <- &clusterpb.Subscribed{Durable: 0, State: stateOf(t, st, id), Owner: refOf(b)}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-aGot:
			if u, ok := m.(*clusterpb.Unsubscribe); ok {
				if got := pidOf(u.Relay); !got.Equal(relay) {
					t.Fatalf("the old owner got Unsubscribe for %v, want the relay %v", got, relay)
				}
				return relay, a, b, tr
			}
		case <-deadline:
			t.Fatal("a renewal that found another owner never unsubscribed from the old one, which goes on serving the relay")
		}
	}
}

// TestRelayRenewalUnsubscribesTheOldOwner: when a renewal finds another
// owner, the one the relay had is told it left (see subscribedTwice), and
// the relay follows the new owner.
func TestRelayRenewalUnsubscribesTheOldOwner(t *testing.T) {
	sys, st, id, evs := seeded(t, 1)
	owners := newFakeOwners(t)
	relay, _, _, tr := subscribedTwice(t, sys, st, id, owners, nil)
	sys.root.Send(relay, eventsOf(evs[0]))
	wantIDs(t, tr, evs)
}

// TestRelayRenewalClosesTheOldOwnersRuntimes: a runtime socket registered
// with the owner a renewal moved the relay from is closed with 1012, to
// register with the new one: its replies would otherwise go to the new
// owner, which does not know it.
func TestRelayRenewalClosesTheOldOwnersRuntimes(t *testing.T) {
	sys, st, id, _ := seeded(t, 1)
	owners := newFakeOwners(t)
	var runtime *fakeTransport
	subscribedTwice(t, sys, st, id, owners, func(relay *actor.PID) { _, runtime = attachRuntime(t, sys, relay, id) })
	if got := runtime.waitClosed(t); got != disconnectOwnerMoved {
		t.Errorf("the old owner's runtime socket closed with %+v, want %+v", got, disconnectOwnerMoved)
	}
}

// TestRelayIgnoresAStaleClosing: a Closing from an owner the relay no
// longer follows (here the one a renewal moved it from, as it is fenced
// later) leaves the relay with its live owner: the runtime socket
// registered there stays open. A
// Closing from the owner it follows makes it attach again, closing the
// runtime socket with 1012 so that it registers with the next owner.
func TestRelayIgnoresAStaleClosing(t *testing.T) {
	sys, st, id, evs := seeded(t, 2)
	owners := newFakeOwners(t)
	relay, a, b, tr := subscribedTwice(t, sys, st, id, owners, nil)
	_, runtime := attachRuntime(t, sys, relay, id)

	sys.root.Send(relay, &clusterpb.Closing{Owner: refOf(a)})
	sys.root.Send(relay, eventsOf(evs[0])) // handled after the Closing: the relay's mailbox keeps the order
	wantIDs(t, tr, evs[:1])
	if runtime.isClosed() {
		t.Fatalf("a Closing from the owner the relay left closed the runtime socket with %+v", runtime.waitClosed(t))
	}

	sys.root.Send(relay, &clusterpb.Closing{Owner: refOf(b)})
	if got := runtime.waitClosed(t); got != disconnectOwnerMoved {
		t.Errorf("after its owner's Closing the runtime socket closed with %+v, want %+v", got, disconnectOwnerMoved)
	}
	owners.waitAsked(t)
}

// attachRuntime attaches a runtime socket to relay and returns its
// connection and transport once the relay has attached it.
func attachRuntime(t *testing.T, sys *System, relay *actor.PID, id string) (*actor.PID, *fakeTransport) {
	t.Helper()
	conn, connGot := inbox(t, sys)
	runtime := newFakeTransport()
	sys.root.Send(relay, &attachConnection{ConversationID: id, Conn: conn, Transport: runtime, Runtime: true})
	select {
	case m := <-connGot:
		if _, ok := m.(*connectionAttached); !ok {
			t.Fatalf("the runtime's connection got %T, want connectionAttached", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the runtime socket was never attached")
	}
	return conn, runtime
}

// TestRelayKeepsTheNewerState: a renewal's answer travels through a future
// while the owner's Events come straight, so Events sent after the answer,
// with a newer state, can reach the relay first. The relay keeps the newer
// state (the owner's epoch, then its state version, order them): the next
// socket to attach gets it in its full_state, not the answer's older one.
// A new owner's state (a higher epoch) wins over a higher version of the
// old owner's.
func TestRelayKeepsTheNewerState(t *testing.T) {
	sys, _, id, evs := seeded(t, 2)
	owners := newFakeOwners(t)
	a, _ := inbox(t, sys)
	b, _ := inbox(t, sys)
	state := func(marker string) []byte {
		body, err := core.StateBody(core.StateKeyFullState, map[string]string{"marker": marker})
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	r := startRelay(t, sys, id, owners)
	owners.waitAsked(t)
	owners.subscribed <- &clusterpb.Subscribed{State: state("v1"), Epoch: 1, StateVersion: 1, Owner: refOf(a)}
	relaySocket(t, sys, r, id).waitFrames(t, 1)
	// askAgain has the relay renew its lease, and returns once it asks
	// the owner: a relay with an answer on its way does not ask again
	// until it has taken it.
	askAgain := func() {
		deadline := time.After(10 * time.Second)
		for {
			sys.root.Send(r, &renewSubscription{})
			select {
			case <-owners.asked:
				return
			case <-time.After(10 * time.Millisecond): // an answer is on its way
			case <-deadline:
				t.Fatal("the relay never asked its owner again")
			}
		}
	}
	// renewWith renews the relay's lease, the owner answering sub, and
	// returns once the relay has taken the answer. It then asks again;
	// that call fails, which changes nothing (the relay keeps its owner).
	renewWith := func(sub *clusterpb.Subscribed) {
		askAgain()
		owners.subscribed <- sub
		askAgain()
		owners.subscribed <- nil
	}
	events := func(ev *core.Event, marker string, epoch, version uint64) {
		m := eventsOf(ev)
		m.State, m.Epoch, m.StateVersion = state(marker), epoch, version
		sys.root.Send(r, m)
	}

	steps := []struct {
		name string
		send func()
		want string
	}{
		{"events with a newer state", func() { events(evs[0], "v3", 1, 3) }, "v3"},
		{"a renewal's answer with an older one, arriving after", func() {
			renewWith(&clusterpb.Subscribed{Durable: evs[0].Seq, State: state("v2"), Epoch: 1, StateVersion: 2, Owner: refOf(a)})
		}, "v3"},
		{"a new owner's state, of a higher epoch", func() {
			renewWith(&clusterpb.Subscribed{Durable: evs[0].Seq, State: state("w1"), Epoch: 2, StateVersion: 1, Owner: refOf(b)})
		}, "w1"},
		{"a state without a stamp, from an older node", func() { events(evs[1], "old-node", 0, 0) }, "old-node"},
	}
	for _, step := range steps {
		step.send()
		// A socket attaching now is handled after the step's messages:
		// the relay's mailbox keeps their order.
		frames := relaySocket(t, sys, r, id).waitFrames(t, 1)
		value, _ := frames[0]["value"].(map[string]any)
		if got, _ := value["marker"].(string); got != step.want {
			t.Fatalf("%s: a socket attaching got the full_state %q, want %q", step.name, got, step.want)
		}
	}
}

// scriptedOwners answers each Subscribe with the next answer in answers.
type scriptedOwners struct {
	answers chan any
	asked   chan struct{}
}

func (o *scriptedOwners) call(ctx context.Context, _ string, msg func(bool) proto.Message) (any, error) {
	if _, ok := msg(false).(*clusterpb.Subscribe); !ok {
		return &clusterpb.Result{}, nil
	}
	o.asked <- struct{}{}
	select {
	case a := <-o.answers:
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestRelayFollowingTheLogAsksAgainWhenRefused: a relay that was
// subscribed (it has a live socket) loses its owner, and the next
// activation cannot load the conversation (a store blip) and refuses the
// subscription: the relay asks again, for its sockets, until an owner
// serves it. Before, it asked no more: its socket stayed open and deaf.
func TestRelayFollowingTheLogAsksAgainWhenRefused(t *testing.T) {
	sys, st, id, evs := seeded(t, 1)
	o := &scriptedOwners{answers: make(chan any, 8), asked: make(chan struct{}, 8)}
	a, _ := inbox(t, sys)
	relay := startRelay(t, sys, id, o)
	<-o.asked
	o.answers <- &clusterpb.Subscribed{Durable: 0, State: stateOf(t, st, id), Owner: refOf(a)}
	tr := relaySocket(t, sys, relay, id)
	tr.waitFrames(t, 1)

	sys.root.Send(relay, &clusterpb.Closing{Owner: refOf(a)}) // the owner moves
	<-o.asked
	o.answers <- &clusterpb.Result{Error: encodeError(fmt.Errorf("load conversation %s: %w", id, core.ErrUnavailable))}
	select {
	case <-o.asked:
	case <-time.After(30 * time.Second):
		t.Fatal("after a refused re-subscription the relay did not ask again: its socket is open and deaf")
	}
	o.answers <- &clusterpb.Subscribed{Durable: 1, State: stateOf(t, st, id), Owner: refOf(a)}
	sys.root.Send(relay, eventsOf(evs[0]))
	wantIDs(t, tr, evs)
	if tr.isClosed() {
		t.Error("the socket was closed")
	}
}
