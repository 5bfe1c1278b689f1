package actors

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/pgstore"
	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

// openPostgres returns a store on a fresh schema of a real PostgreSQL
// (pgtest), migrated, closed at the end of t.
func openPostgres(t testing.TB) *pgstore.Store {
	t.Helper()
	st, err := pgstore.Open(pgtest.DSN(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for deadline := time.Now().Add(time.Minute); st.Ready(context.Background()) != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(st.Ready(context.Background()))
		}
	}
	return st
}

// unawareOwner is a cluster activation that takes its epoch as it loads
// (fencing.go) and never checks it again: an owner fenced by a newer
// activation learns it only from the store's refusals.
type unawareOwner struct{ *clusterActivation }

func (unawareOwner) start(actor.Context, *conversation) {}

// A stale owner cannot overwrite the conversation's state: its write is
// conditional on its epoch, as its appends are. A navigate, which writes
// the state and appends nothing, fails as fenced, the stored HEAD stays
// the new owner's, and the stale activation ends, closing its sockets.
// Before, the write carried no epoch and PostgreSQL took it.
func TestFencedOwnerCannotWriteTheState(t *testing.T) {
	ctx := context.Background()
	st := openPostgres(t)
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	owner := sys.root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return newConversation(sys, id, unawareOwner{&clusterActivation{}})
	}))
	t.Cleanup(func() { _ = sys.root.StopFuture(owner).Wait() })
	request := func(msg any) (any, error) { return sys.root.RequestFuture(owner, msg, 30*time.Second).Result() }

	res, err := request(&appendEvent{ConversationID: id, Source: core.SourceAgent, Kind: core.KindMessage, Body: messageBody("a")})
	if _, ok := res.(*eventAppended); err != nil || !ok {
		t.Fatalf("the owner's post answered %v (%v)", res, err)
	}
	conn, _ := inbox(t, sys)
	socket := newFakeTransport()
	sys.root.Send(owner, &attachConnection{ConversationID: id, Conn: conn, Transport: socket})
	socket.waitFrames(t, 1)
	before, err := st.Conversation(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Acquire(ctx, id); err != nil { // a newer activation, elsewhere
		t.Fatal(err)
	}

	res, err = request(&navigateConversation{ConversationID: id})
	if err != nil || !errors.Is(answerErr(res), core.ErrFenced) {
		t.Errorf("the stale owner's navigate answered %v (%v), want it failed as fenced", res, err)
	}
	after, err := st.Conversation(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if after.Head != before.Head {
		t.Errorf("stored HEAD %+v after the stale owner's navigate, want %+v as the new owner left it", after.Head, before.Head)
	}
	if got := socket.waitClosed(t); got != core.DisconnectInternalError {
		t.Errorf("the stale owner's socket closed with %+v, want %+v", got, core.DisconnectInternalError)
	}
}
