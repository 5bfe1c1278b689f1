package actors

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/actors/clusterpb"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/memstore"
)

// These tests cover a runtime socket held by another node's relay
// (relay.go): the owner forgets it when that relay goes away, and the
// relay makes sure the owner hears when the socket leaves.

// runtimeFrameWhere waits for the RuntimeFrame on a relay's inbox whose
// frame keep holds, failing on a close of the socket.
func runtimeFrameWhere(t *testing.T, got chan any, what string, keep func(map[string]any) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-got:
			f, ok := m.(*clusterpb.RuntimeFrame)
			if !ok {
				continue
			}
			if f.CloseCode != 0 {
				t.Fatalf("waiting for %s, the runtime's socket was closed with %d %q", what, f.CloseCode, f.CloseReason)
			}
			var frame map[string]any
			if json.Unmarshal(f.Frame, &frame) == nil && keep(frame) {
				return
			}
		case <-deadline:
			t.Fatalf("the runtime's relay never got %s", what)
		}
	}
}

// TestOwnerDropsTheRuntimeOfARelayThatIsGone: the node holding a
// runtime's socket dies mid-run (the owner's watch reports its relay
// terminated), whether or not its relay had subscribed yet. The owner
// detaches that runtime as if its socket had dropped on a single node: the
// run is reported lost (a ConversationErrorEvent RuntimeDisconnected, then
// execution_status error), and the runtime, reconnecting through another
// node, is accepted and runs the conversation. It used to be refused with
// 1013 for as long as the activation lived, the run staying "running".
func TestOwnerDropsTheRuntimeOfARelayThatIsGone(t *testing.T) {
	for _, tt := range []struct {
		name       string
		subscribed bool
	}{
		{"its relay followed the owner", true},
		{"its relay had not subscribed yet", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sys := startSystem(t, memstore.New(), 0)
			id := createConv(t, sys)
			owner := sys.root.Spawn(actor.PropsFromProducer(func() actor.Actor {
				return newConversation(sys, id, ownerOnANode{&clusterActivation{}})
			}))
			t.Cleanup(func() { _ = sys.root.StopFuture(owner).Wait() })
			request := func(msg any) any {
				t.Helper()
				res, err := sys.root.RequestFuture(owner, msg, 10*time.Second).Result()
				if err != nil {
					t.Fatalf("%T: %v", msg, err)
				}
				return res
			}
			attach := func(relay, conn *actor.PID) {
				t.Helper()
				if r, ok := request(&clusterpb.AttachRuntime{Relay: refOf(relay), Conn: refOf(conn)}).(*clusterpb.Result); !ok || r.Error != nil {
					t.Fatalf("AttachRuntime answered %v, want success", r)
				}
			}
			run := func() {
				t.Helper()
				if res := request(&runConversation{ConversationID: id}); !isDone(res) {
					t.Fatalf("run answered %#v, want commandDone", res)
				}
			}
			clientConn, _ := inbox(t, sys)
			client := newFakeTransport()
			sys.root.Send(owner, &attachConnection{ConversationID: id, Conn: clientConn, Transport: client})
			client.waitFrames(t, 1)

			// Node X holds the runtime's socket; the conversation runs.
			relayX := sys.root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
			if tt.subscribed {
				request(&clusterpb.Subscribe{Relay: refOf(relayX)})
			}
			connX, _ := inbox(t, sys)
			attach(relayX, connX)
			run()

			// Node X dies.
			_ = sys.root.StopFuture(relayX).Wait()
			framesWhere(t, client, 1, "ConversationErrorEvent", func(f map[string]any) bool {
				return f["kind"] == core.KindConversationError && f["code"] == core.CodeRuntimeDisconnected
			})
			framesWhere(t, client, 1, "status error", func(f map[string]any) bool {
				return f["key"] == core.StateKeyExecutionState && f["value"] == string(core.StatusError)
			})

			// The runtime reconnects through node Y.
			relayY, gotY := inbox(t, sys)
			connY, _ := inbox(t, sys)
			attach(relayY, connY)
			runtimeFrameWhere(t, gotY, "the state frame", func(f map[string]any) bool { return f["type"] == core.FrameTypeState })
			run()
			runtimeFrameWhere(t, gotY, "the run command", isCommand(core.CommandRun))
		})
	}
}

// detachOwners is fakeOwners that answers DetachRuntime, passing each
// one's connection ID to detached, and holds each AttachRuntime until the
// test puts a token in attaching (when set).
type detachOwners struct {
	*fakeOwners
	attaching chan struct{}
	detached  chan string
}

func (d *detachOwners) call(ctx context.Context, id string, msg func(bool) proto.Message) (any, error) {
	switch m := msg(false).(type) {
	case *clusterpb.DetachRuntime:
		d.detached <- m.Conn.Id
		return &clusterpb.Result{}, nil
	case *clusterpb.AttachRuntime:
		if d.attaching != nil {
			select {
			case <-d.attaching:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return d.fakeOwners.call(ctx, id, msg)
}

// TestRelayDetachesARuntimeItCannotTellDirectly: a runtime's socket that
// leaves is detached through placement, which reaches the activation its
// attach reached, also when the relay cannot tell the owner it follows:
// it has none yet (it is subscribing), or the socket left while its
// attach was on its way (the DetachRuntime sent straight to the owner
// then may come first, and is detached again once the attach is
// answered). The DetachRuntime used to be dropped, and the owner kept the
// socket as its runtime, refusing the next with 1013.
func TestRelayDetachesARuntimeItCannotTellDirectly(t *testing.T) {
	for _, tt := range []struct {
		name  string
		owner bool // the relay follows an owner
	}{
		{"the relay has no owner yet", false},
		{"the socket left while its attach was on its way", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sys, st, id, _ := seeded(t, 1)
			owners := &detachOwners{fakeOwners: newFakeOwners(t), detached: make(chan string, 8)}
			if tt.owner {
				owners.attaching = make(chan struct{})
			}
			owner, ownerGot := inbox(t, sys)
			relay := startRelay(t, sys, id, owners)
			owners.waitAsked(t)
			if tt.owner {
				owners.subscribed <- &clusterpb.Subscribed{State: stateOf(t, st, id), Owner: refOf(owner)}
				relaySocket(t, sys, relay, id).waitFrames(t, 1) // the relay has taken the answer
			}
			var conn *actor.PID
			if tt.owner { // the attach waits in owners.attaching
				conn, _ = inbox(t, sys)
				sys.root.Send(relay, &attachConnection{ConversationID: id, Conn: conn, Transport: newFakeTransport(), Runtime: true})
			} else {
				conn, _ = attachRuntime(t, sys, relay, id)
			}
			sys.root.Send(relay, &detachConnection{ConversationID: id, Conn: conn})
			if tt.owner {
				// Straight to the owner, and through placement: both may
				// come before the attach.
				waitDetachRuntime(t, ownerGot)
				select {
				case <-owners.detached:
				case <-time.After(10 * time.Second):
					t.Fatal("the runtime's socket left and no DetachRuntime went through placement")
				}
				owners.attaching <- struct{}{}
			}
			select {
			case got := <-owners.detached:
				if got != conn.Id {
					t.Errorf("DetachRuntime through placement for connection %s, want %s", got, conn.Id)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the runtime's socket left and no DetachRuntime went through placement: the owner keeps it as its runtime")
			}
		})
	}
}

// waitDetachRuntime waits for a DetachRuntime on an owner's inbox.
func waitDetachRuntime(t *testing.T, got chan any) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-got:
			if _, ok := m.(*clusterpb.DetachRuntime); ok {
				return
			}
		case <-deadline:
			t.Fatal("the owner the relay follows got no DetachRuntime")
		}
	}
}

// TestRelayDetachesTheRuntimesOfAnOwnerItLeaves: when a renewal finds
// another owner, the runtime socket the relay held is closed (1012) and
// detached both from the owner it left, which may live on, and through
// placement: its attach went through placement and may have reached the
// new owner, which would otherwise keep it as its runtime.
func TestRelayDetachesTheRuntimesOfAnOwnerItLeaves(t *testing.T) {
	sys, st, id, _ := seeded(t, 1)
	owners := &detachOwners{fakeOwners: newFakeOwners(t), detached: make(chan string, 8)}
	a, aGot := inbox(t, sys)
	b, _ := inbox(t, sys)
	relay := startRelay(t, sys, id, owners)
	owners.waitAsked(t)
	owners.subscribed <- &clusterpb.Subscribed{State: stateOf(t, st, id), Owner: refOf(a)}
	relaySocket(t, sys, relay, id).waitFrames(t, 1)
	conn, runtime := attachRuntime(t, sys, relay, id)

	sys.root.Send(relay, &renewSubscription{})
	owners.waitAsked(t)
	owners.subscribed <- &clusterpb.Subscribed{State: stateOf(t, st, id), Owner: refOf(b)}
	if got := runtime.waitClosed(t); got != disconnectOwnerMoved {
		t.Errorf("the runtime socket closed with %+v, want %+v", got, disconnectOwnerMoved)
	}
	waitDetachRuntime(t, aGot)
	select {
	case got := <-owners.detached:
		if got != conn.Id {
			t.Errorf("DetachRuntime through placement for connection %s, want %s", got, conn.Id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no DetachRuntime went through placement: the new owner may keep the runtime")
	}
}

func ownerForTest(t *testing.T, sys *System, id string) (*actor.PID, func(any) any) {
	owner := sys.root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return newConversation(sys, id, ownerOnANode{&clusterActivation{}})
	}))
	t.Cleanup(func() { _ = sys.root.StopFuture(owner).Wait() })
	return owner, func(msg any) any {
		t.Helper()
		res, err := sys.root.RequestFuture(owner, msg, 10*time.Second).Result()
		if err != nil {
			t.Fatalf("%T: %v", msg, err)
		}
		return res
	}
}

// TestRetriedAttachRuntimeIsAnsweredAsTheFirst: an AttachRuntime that
// placement sends again (its first attempt went unanswered for 3 s) after
// the first registered the runtime is answered as the first was. Before, it
// was an error: the relay closed the socket 1013 without a DetachRuntime,
// and the owner kept the runtime, refusing every reconnection with 1013.
func TestRetriedAttachRuntimeIsAnsweredAsTheFirst(t *testing.T) {
	sys := startSystem(t, memstore.New(), 0)
	id := createConv(t, sys)
	_, request := ownerForTest(t, sys, id)
	relayX, _ := inbox(t, sys)
	connX, _ := inbox(t, sys)
	at := &clusterpb.AttachRuntime{Relay: refOf(relayX), Conn: refOf(connX)}
	if r := request(at).(*clusterpb.Result); r.Error != nil {
		t.Fatalf("first attach: %v", r.Error)
	}
	if r := request(at).(*clusterpb.Result); r.Error != nil {
		t.Errorf("the retried attach of the same connection answered %v: the relay would close the socket and never detach it", r.Error)
	}
}

// TestRelayDetachesARuntimeItsOwnerClosed: a runtime socket the owner
// closed (a RuntimeFrame close: its replay's read failed, say) is detached
// from the owner, which would otherwise keep it as its runtime and refuse
// every reconnection with 1013. Before, it left without any DetachRuntime.
func TestRelayDetachesARuntimeItsOwnerClosed(t *testing.T) {
	sys, st, id, _ := seeded(t, 1)
	owners := &detachOwners{fakeOwners: newFakeOwners(t), detached: make(chan string, 8)}
	owner, ownerGot := inbox(t, sys)
	relay := startRelay(t, sys, id, owners)
	owners.waitAsked(t)
	owners.subscribed <- &clusterpb.Subscribed{State: stateOf(t, st, id), Owner: refOf(owner)}
	relaySocket(t, sys, relay, id).waitFrames(t, 1)
	conn, _ := attachRuntime(t, sys, relay, id)
	sys.root.Send(relay, &clusterpb.RuntimeFrame{Conn: refOf(conn), CloseCode: 1011})
	sys.root.Send(relay, &detachConnection{ConversationID: id, Conn: conn})
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-ownerGot:
			if _, ok := m.(*clusterpb.DetachRuntime); ok {
				return
			}
		case <-owners.detached:
			return
		case <-deadline:
			t.Fatal("no DetachRuntime for a runtime socket the owner closed")
		}
	}
}
