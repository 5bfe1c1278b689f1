package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/agent-server/agent-server/core"
)

// This file owns fencing in cluster mode. PostgreSQL, not placement, is
// the authority on who may write a conversation's log: protoactor's
// cluster can briefly activate one conversation on two members while their
// views of the membership differ (asynkron/protoactor-go#799). So each
// activation takes a new ownership epoch from the conversation's row as it
// loads (core.Fencer.Acquire), every append it makes carries that epoch,
// and the store refuses an append whose epoch is no longer the
// conversation's (core.ErrFenced). An activation whose append is fenced
// stops (conversation.stored ends it): its relays attach again to the live
// owner, and its callers retry there; nothing it tried to append lands, and
// no conversation ever has two events with one Seq.

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
	if m.Err != nil {
		m.Err = fmt.Errorf("take ownership: %w", m.Err)
	}
	return m
}
