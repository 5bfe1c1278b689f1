package actors

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
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

// These tests hold cluster mode to two promises: a request a node retries
// is stored once, and a socket to a conversation that does not exist is
// closed with 4004 at once, as on a single node. Some run a one-member
// cluster on loopback (placement, the relay and the owner for real); the
// others play one side (the owner, or the relay) on a single-node System.

// fencingMemstore fences trivially (epoch 0, which memstore accepts), so
// that a System runs in cluster mode over a memstore.
type fencingMemstore struct{ core.Store }

func (f fencingMemstore) Acquire(ctx context.Context, id string) (uint64, uint64, error) {
	if _, err := f.Conversation(ctx, id); err != nil {
		return 0, 0, err
	}
	n, err := f.LastSeq(ctx, id)
	return 0, n, err
}

func (f fencingMemstore) Epoch(ctx context.Context, id string) (uint64, error) {
	_, err := f.Conversation(ctx, id)
	return 0, err
}

// freePort is a TCP port free on loopback a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// oneMember runs a System over st as the only member of a cluster on
// loopback (the static provider), once it joined.
func oneMember(t *testing.T, st core.Store) *System {
	t.Helper()
	am := freePort(t)
	cl := config.Default().Cluster
	cl.Enabled = true
	cl.Bind = "127.0.0.1:" + strconv.Itoa(freePort(t))
	cl.Static = config.ClusterStatic{Port: am, Peers: []string{"127.0.0.1:" + strconv.Itoa(am)}}
	cl.HeartbeatExpiration = 2 * time.Second
	sys, err := New(Options{Store: fencingMemstore{st}, Chains: staticChains{core.RouteEvents: nil}, Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, sys) })
	deadline := time.Now().Add(15 * time.Second)
	for sys.ClusterReady(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the one member never joined its cluster")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sys
}

// countKind counts the events of kind in conversation id's log.
func countKind(t *testing.T, st core.Store, id, kind string) int {
	t.Helper()
	evs, err := st.Events(context.Background(), id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// A publish whose commit takes longer than one call attempt (callAttempt)
// is sent again by the node that forwards it. Before publishes carried an
// idempotency key, the owner stored the retry as a second event, with a
// second ID, which every client saw twice ("one publish stored 2
// PauseEvents"). The runtime's publishes through a relay take the same
// path (forwardVia) as this REST publish.
func TestClusterPublishSlowerThanAnAttemptIsStoredOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a call attempt (3 s)")
	}
	st := &gatedStore{Store: memstore.New(), gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	var once sync.Once
	open := func() { once.Do(func() { close(st.gate) }) }
	sys := oneMember(t, st)
	t.Cleanup(open) // before the shutdown, which flushes the writer
	id := createConv(t, sys)

	done := make(chan error, 1)
	var got *core.Event
	go func() {
		p, err := core.ParsePublished([]byte(`{"kind":"PauseEvent","source":"agent"}`))
		if err == nil {
			got, err = sys.PublishEvent(context.Background(), id, p)
		}
		done <- err
	}()
	select {
	case <-st.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the publish never reached the store")
	}
	time.Sleep(callAttempt + 500*time.Millisecond) // the first attempt times out; the retry is on its way
	open()
	if err := <-done; err != nil {
		t.Fatalf("PublishEvent: %v", err)
	}
	if n := countKind(t, st, id, "PauseEvent"); n != 1 {
		t.Errorf("one publish stored %d PauseEvents, want 1", n)
	}
	evs, err := st.Events(context.Background(), id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if last := evs[len(evs)-1]; got == nil || got.ID != last.ID {
		t.Errorf("PublishEvent answered %+v, want the stored event %s", got, last.ID)
	}
}

// publishOnWire is a runtime's PauseEvent as a forwarding node sends it to
// the owner: with the key it made, retry set on every attempt after the
// first.
func publishOnWire(ref, key string, retry bool) *clusterpb.Command {
	return &clusterpb.Command{Command: &clusterpb.Command_Publish{Publish: &clusterpb.Publish{
		Ref: ref, Source: string(core.SourceAgent), Kind: "PauseEvent", Body: []byte(` { "note" : "spaced out" } `), IdempotencyKey: key, Retry: retry}}}
}

// spawnOwner spawns conversation id's cluster activation on sys, stopped
// at cleanup.
func spawnOwner(t *testing.T, sys *System, id string) *actor.PID {
	t.Helper()
	owner := sys.root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return newConversation(sys, id, ownerOnANode{&clusterActivation{}})
	}))
	t.Cleanup(func() { _ = sys.root.StopFuture(owner).Wait() })
	return owner
}

// publishedID waits for the owner's answer to a publish and returns the
// stored event's ID.
func publishedID(t *testing.T, f *actor.Future, ref string) string {
	t.Helper()
	res, err := f.Result()
	if err != nil {
		t.Fatalf("publish %s: %v", ref, err)
	}
	r, ok := res.(*clusterpb.Result)
	switch {
	case !ok:
		t.Fatalf("publish %s answered %T, want a Result", ref, res)
	case r.Error != nil:
		t.Fatalf("publish %s failed: %s %s", ref, r.Error.Code, r.Error.Message)
	case r.Ref != ref || r.Event == nil:
		t.Fatalf("publish %s answered ref %q, event %v", ref, r.Ref, r.Event)
	}
	return r.Event.Id
}

// The owner's half of a retried publish: the retry, under the first
// attempt's key, is answered with the first attempt's event and stores
// nothing, whether the first is still being written, is stored, or was
// stored by an earlier activation (the retry went to a new owner). Before,
// a publish carried no key and each attempt was stored.
func TestOwnerStoresARetriedPublishOnce(t *testing.T) {
	const wait = 10 * time.Second
	tests := []struct {
		name string
		// retry sends the first attempt and its retry to the owner(s) and
		// returns their answers' event IDs.
		retry func(t *testing.T, sys *System, st *gatedStore, open func(), id string) (first, again string)
	}{
		{"while the first is being written", func(t *testing.T, sys *System, st *gatedStore, open func(), id string) (string, string) {
			owner := spawnOwner(t, sys, id)
			f1 := sys.root.RequestFuture(owner, publishOnWire("1", "~k", false), wait)
			<-st.entered
			f2 := sys.root.RequestFuture(owner, publishOnWire("2", "~k", true), wait)
			time.Sleep(100 * time.Millisecond) // the retry reaches the owner while the write waits
			open()
			return publishedID(t, f1, "1"), publishedID(t, f2, "2")
		}},
		{"after the first is stored", func(t *testing.T, sys *System, _ *gatedStore, open func(), id string) (string, string) {
			open()
			owner := spawnOwner(t, sys, id)
			first := publishedID(t, sys.root.RequestFuture(owner, publishOnWire("1", "~k", false), wait), "1")
			return first, publishedID(t, sys.root.RequestFuture(owner, publishOnWire("2", "~k", true), wait), "2")
		}},
		{"at a new owner", func(t *testing.T, sys *System, _ *gatedStore, open func(), id string) (string, string) {
			open()
			owner := spawnOwner(t, sys, id)
			first := publishedID(t, sys.root.RequestFuture(owner, publishOnWire("1", "~k", false), wait), "1")
			if err := sys.root.StopFuture(owner).Wait(); err != nil {
				t.Fatal(err)
			}
			next := spawnOwner(t, sys, id)
			return first, publishedID(t, sys.root.RequestFuture(next, publishOnWire("2", "~k", true), wait), "2")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &gatedStore{Store: memstore.New(), gate: make(chan struct{}), entered: make(chan struct{}, 1)}
			var once sync.Once
			open := func() { once.Do(func() { close(st.gate) }) }
			sys := startSystem(t, st, 0)
			t.Cleanup(open)
			id := createConv(t, sys)
			first, again := tt.retry(t, sys, st, open, id)
			if first != again {
				t.Errorf("the retry answered event %s, want the first attempt's %s", again, first)
			}
			if n := countKind(t, st, id, "PauseEvent"); n != 1 {
				t.Errorf("a publish and its retry stored %d PauseEvents, want 1", n)
			}
		})
	}
}

// A socket to a conversation that does not exist is closed with 4004 at
// once in cluster mode too. Before, the owner's activation failed its load
// and then panicked answering the relay's Subscribe; the relay retried for
// good and the socket was closed after attachTimeout (10 s) with 1013.
func TestClusterUnknownConversationClosesWith4004(t *testing.T) {
	sys := oneMember(t, memstore.New())
	tr := connect(t, sys, core.NewID(), Replay{})
	start := time.Now()
	if got := tr.waitClosed(t); got != core.DisconnectNotFound {
		t.Errorf("a socket to an unknown conversation was closed after %s with %+v, want %+v", time.Since(start).Round(time.Millisecond), got, core.DisconnectNotFound)
	}
}

// unavailableStore cannot read any conversation.
type unavailableStore struct{ core.Store }

func (unavailableStore) Conversation(context.Context, string) (*core.Conversation, error) {
	return nil, fmt.Errorf("read conversation: %w", core.ErrUnavailable)
}

// heldLoads holds every Conversation read until release is closed: a
// request reaches the activation before its load fails, as a cluster
// call that activates it does (an activation whose load failed stops
// itself; a request after that is a dead letter, which the caller
// retries).
type heldLoads struct {
	core.Store
	release chan struct{}
}

func (h heldLoads) Conversation(ctx context.Context, id string) (*core.Conversation, error) {
	<-h.release
	return h.Store.Conversation(ctx, id)
}

// An activation without its conversation answers a relay's Subscribe with
// why, in the wire's error classes, as it answers appends. Before, it
// dereferenced the conversation it never loaded and panicked.
func TestOwnerRefusesASubscribeWithoutItsConversation(t *testing.T) {
	tests := []struct {
		name  string
		store core.Store
		want  string
	}{
		{"not in the store", memstore.New(), errNotFound},
		{"the store unavailable", unavailableStore{memstore.New()}, errUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			held := heldLoads{Store: tt.store, release: make(chan struct{})}
			sys := startSystem(t, held, 0)
			owner := spawnOwner(t, sys, core.NewID())
			relay, _ := inbox(t, sys)
			f := sys.root.RequestFuture(owner, &clusterpb.Subscribe{Relay: refOf(relay)}, 5*time.Second)
			close(held.release)
			res, err := f.Result()
			if err != nil {
				t.Fatalf("Subscribe got no answer: %v", err)
			}
			r, ok := res.(*clusterpb.Result)
			if !ok || r.Error == nil || r.Error.Code != tt.want {
				t.Errorf("Subscribe answered %v, want a Result with error %q", res, tt.want)
			}
		})
	}
}

// refusingOwners answers every Subscribe with err, as an owner without its
// conversation does, and counts the calls.
type refusingOwners struct {
	err   error
	calls atomic.Int64
}

func (o *refusingOwners) call(_ context.Context, _ string, msg func(bool) proto.Message) (any, error) {
	if _, ok := msg(false).(*clusterpb.Subscribe); ok {
		o.calls.Add(1)
	}
	return &clusterpb.Result{Error: encodeError(o.err)}, nil
}

// A relay whose owner refuses the subscription closes the sockets waiting
// for it as a single node closes them: 4004 for a conversation that does
// not exist (and every later socket at once), 1013 when the store could
// not be read (a later socket asks again). Before, the relay retried
// every refusal for good and never closed a socket.
func TestRelayClosesWaitingSocketsWhenTheOwnerRefuses(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		want      core.Disconnect
		asksAgain bool // a later socket makes the relay ask the owner again
	}{
		{"not found", fmt.Errorf("conversation x: %w", core.ErrNotFound), core.DisconnectNotFound, false},
		{"unavailable", fmt.Errorf("load conversation x: %w", core.ErrUnavailable), core.DisconnectUnavailable, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := startSystem(t, memstore.New(), 0)
			owners := &refusingOwners{err: tt.err}
			id := core.NewID()
			relay := startRelay(t, sys, id, owners)
			if got := relaySocket(t, sys, relay, id).waitClosed(t); got != tt.want {
				t.Errorf("the waiting socket was closed with %+v, want %+v", got, tt.want)
			}
			asked := owners.calls.Load()
			if got := relaySocket(t, sys, relay, id).waitClosed(t); got != tt.want {
				t.Errorf("a later socket was closed with %+v, want %+v", got, tt.want)
			}
			if again := owners.calls.Load() > asked; again != tt.asksAgain {
				t.Errorf("a later socket asked the owner again: %v, want %v", again, tt.asksAgain)
			}
		})
	}
}

// failingOwners fails every call on the way, as an unreachable owner does.
type failingOwners struct{}

func (failingOwners) call(context.Context, string, func(bool) proto.Message) (any, error) {
	return nil, errors.New("the owner did not answer")
}

// relayProbe asks a relay, in its mailbox, what it holds.
type relayProbe struct{ reply chan relayProbed }

// relayProbed is what relayProbe reports.
type relayProbed struct {
	waiting int
	active  time.Time
}

// A relay whose owner cannot be reached forgets a socket that detached
// while waiting, and its own retries are not activity, so that it goes
// idle and stops. Before, the socket stayed in waiting and every retry
// counted as activity: the relay never stopped.
func TestRelayWithAnUnreachableOwnerCanGoIdle(t *testing.T) {
	sys := startSystem(t, memstore.New(), 0)
	id := core.NewID()
	r := newRelay(sys, id)
	r.owners = failingOwners{}
	relay := sys.root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if p, ok := ctx.Message().(*relayProbe); ok {
			p.reply <- relayProbed{waiting: len(r.waiting), active: r.active}
			return
		}
		r.Receive(ctx)
	}))
	t.Cleanup(func() { _ = sys.root.StopFuture(relay).Wait() })
	conn, _ := inbox(t, sys)
	sys.root.Send(relay, &attachConnection{ConversationID: id, Conn: conn, Transport: newFakeTransport()})
	sys.root.Send(relay, &detachConnection{ConversationID: id, Conn: conn})
	probe := func() relayProbed {
		p := &relayProbe{reply: make(chan relayProbed, 1)}
		sys.root.Send(relay, p)
		return <-p.reply
	}
	detached := probe().active
	time.Sleep(700 * time.Millisecond) // a few retries (every 200 ms)
	got := probe()
	if got.waiting != 0 {
		t.Errorf("the relay still holds %d waiting sockets after the only one detached", got.waiting)
	}
	if got.active.After(detached) {
		t.Errorf("the relay was last active %s after the detach, with nothing but its own retries", got.active.Sub(detached).Round(time.Millisecond))
	}
}

// stuckState never completes a state write once hold is set: the owner
// "dies" between its event's commit and its state's write.
type stuckState struct {
	core.Store
	hold atomic.Bool
}

func (s *stuckState) UpdateConversation(ctx context.Context, c *core.Conversation, epoch uint64) error {
	if s.hold.Load() {
		time.Sleep(2 * time.Second)
		return errors.New("owner died before its state write")
	}
	return s.Store.UpdateConversation(ctx, c, epoch)
}

// TestRetriedStateUpdateIsAppliedAtTheNewOwner: a runtime's state update
// is stored (its event) but its owner stops before the conversation's row
// is written; the forwarding node retries at the new owner, which applies
// it. With the forwarding node's key, the retry was answered with the
// first attempt's event and applied nothing: the change was lost although
// the runtime was told it succeeded.
func TestRetriedStateUpdateIsAppliedAtTheNewOwner(t *testing.T) {
	st := &stuckState{Store: memstore.New()}
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	st.hold.Store(true)
	p, err := core.ParsePublished([]byte(`{"kind":"ConversationStateUpdateEvent","source":"environment","key":"stats","value":{"usage_to_metrics":{"x":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	wire := func(retry bool) *clusterpb.Command {
		msg, err := toOwner(&publishEvent{ConversationID: id, Ref: "r", Event: p, Key: "~k"}, retry)
		if err != nil {
			t.Fatal(err)
		}
		return msg.(*clusterpb.Command)
	}
	a := spawnOwner(t, sys, id)
	sys.root.Send(a, wire(false)) // its answer is lost with the owner
	deadline := time.Now().Add(5 * time.Second)
	for countKind(t, st, id, core.KindStateUpdate) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the state update never reached the log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = sys.root.StopFuture(a).Wait()
	st.hold.Store(false)

	b := spawnOwner(t, sys, id)
	res, err := sys.root.RequestFuture(b, wire(true), 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(*clusterpb.Result); r.Error != nil || r.Event == nil {
		t.Fatalf("retry answered %v", r)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		conv, err := st.Conversation(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if len(conv.Stats) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retry was answered as stored, but the conversation's stats are %q: the update is lost", conv.Stats)
		}
	}
}

type keysProbe struct{ reply chan [2]int }

// TestOwnerForgetsForwardedKeysOnceStored: the owner keeps a forwarding
// node's key in memory only until its event is stored; a retry then finds
// it in the store. Before, every forwarded publish left its whole event
// (body and wire form) in memory until maxKeys (4096) of them were held:
// 200 observations of 64 KiB held 25 MB.
func TestOwnerForgetsForwardedKeysOnceStored(t *testing.T) {
	sys := startSystem(t, memstore.New(), 0)
	id := createConv(t, sys)
	c := newConversation(sys, id, ownerOnANode{&clusterActivation{}})
	owner := sys.root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if p, ok := ctx.Message().(*keysProbe); ok {
			n, bytes := 0, 0
			for _, k := range c.keys {
				if k.event != nil {
					n++
					bytes += len(k.event.Raw) + len(k.event.Body)
				}
			}
			p.reply <- [2]int{n, bytes}
			return
		}
		c.Receive(ctx)
	}))
	t.Cleanup(func() { _ = sys.root.StopFuture(owner).Wait() })
	obs := strings.Repeat("x", 64<<10)
	for i := range 200 {
		cmd := &clusterpb.Command{Command: &clusterpb.Command_Publish{Publish: &clusterpb.Publish{
			Ref: fmt.Sprint(i), Source: string(core.SourceEnvironment), Kind: "ObservationEvent",
			Body: []byte(`{"observation":"` + obs + `"}`), IdempotencyKey: fmt.Sprintf("~%d", i)}}}
		if _, err := sys.root.RequestFuture(owner, cmd, 5*time.Second).Result(); err != nil {
			t.Fatal(err)
		}
	}
	p := &keysProbe{reply: make(chan [2]int, 1)}
	sys.root.Send(owner, p)
	got := <-p.reply
	if got[0] > 0 {
		t.Errorf("settled publishes stay cached: %d events, %d KiB", got[0], got[1]>>10)
	}
}
