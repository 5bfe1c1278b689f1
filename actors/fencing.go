package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// This file owns fencing in cluster mode. PostgreSQL, not placement, is
// the authority on who may write a conversation's log: protoactor's
// cluster can briefly activate one conversation on two members while their
// views of the membership differ (asynkron/protoactor-go#799). So each
// activation takes a new ownership epoch from the conversation's row as it
// loads (core.Fencer.Acquire), every append and every write of the state
// it makes carries that epoch, and the store refuses one whose epoch is no
// longer the conversation's (core.ErrFenced). An activation whose append
// or state write is fenced stops (conversation.stored, stateSaved end it):
// its relays attach again to the live owner, and its callers retry there;
// nothing it tried to write lands, no conversation ever has two events
// with one Seq, and no stale owner overwrites the live one's state.

// load takes a new epoch and reads where the log ends at that epoch: from
// then on no older activation can append, so the log this one continues is
// the whole log.
func (a *clusterActivation) load(store core.Store, id string) *conversationLoaded {
	m := &conversationLoaded{}
	fencer, ok := store.(core.Fencer)
	if !ok {
		m.Err = errors.New("cluster mode needs a store that fences (storage.driver: postgres)")
		return m
	}
	bg := context.Background()
	m.Epoch, m.LastSeq, m.Err = fencer.Acquire(bg, id)
	if m.Err == nil {
		m.Conv, m.Err = store.Conversation(bg, id)
	}
	if m.Err == nil {
		m.LastTS, m.Err = lastTimestamp(store, id, m.LastSeq)
	}
	if m.Err == nil {
		m.Conv, m.Err = withHead(store, m.Conv, m.LastSeq)
	}
	if m.Err != nil {
		m.Err = fmt.Errorf("take ownership: %w", m.Err)
	}
	return m
}

// A fenced activation learns it is fenced at its next append. One that
// appends nothing (its conversation's posts go to a newer activation, as
// another node's view of the membership routes them) would serve its
// relays a log that no longer moves. So each activation also checks, every
// half heartbeat_expiration, that the conversation's epoch is still its
// own, and stops when it is not: its relays attach again.

// checkEpoch tells a cluster activation, from its timer, to check its epoch.
type checkEpoch struct{}

// epochChecked reports the conversation's current epoch.
type epochChecked struct {
	Epoch uint64
	Err   error
}

// IgnoreDeadLetterLogging: the timer may fire after the actor stopped.
func (*checkEpoch) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: a check may finish after the actor stopped.
func (*epochChecked) IgnoreDeadLetterLogging() {}

// armEpochCheck schedules the next check.
func (a *clusterActivation) armEpochCheck(ctx actor.Context) {
	every := time.Second
	if a.p != nil {
		every = max(a.p.cfg.HeartbeatExpiration/2, 500*time.Millisecond)
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	a.epochTimer = time.AfterFunc(every, func() { root.Send(self, &checkEpoch{}) })
}

// checkEpochNow reads the conversation's epoch off the mailbox.
func (a *clusterActivation) checkEpochNow(ctx actor.Context, c *conversation) {
	fencer, ok := c.sys.store.(core.Fencer)
	if !ok || c.gone {
		return
	}
	self, root, id := ctx.Self(), ctx.ActorSystem().Root, c.id
	go func() {
		e, err := fencer.Epoch(context.Background(), id)
		root.Send(self, &epochChecked{Epoch: e, Err: err})
	}()
}

// epochRead stops the activation when a newer one took the conversation.
func (a *clusterActivation) epochRead(ctx actor.Context, c *conversation, m *epochChecked) {
	if c.gone {
		return
	}
	switch {
	case m.Err == nil && m.Epoch > c.epoch:
		c.sys.log.Info("cluster: a newer activation owns the conversation; stopping this one", "conversation", c.id, "epoch", c.epoch, "current", m.Epoch)
		c.sys.metrics.fenced()
		c.end(ctx, core.DisconnectInternalError, fmt.Errorf("epoch %d, the conversation is at %d: %w", c.epoch, m.Epoch, core.ErrFenced))
	case errors.Is(m.Err, core.ErrNotFound):
		c.end(ctx, core.DisconnectNotFound, m.Err)
	default:
		a.armEpochCheck(ctx)
	}
}
