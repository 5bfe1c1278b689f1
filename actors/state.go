package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// control is the conversation actor's control plane: its state's
// persistence (this file) and its agent runtime (runtime.go).
//
// A change to the state (core.Settings from REST, a runtime's state
// update, a run, a pause) replaces the actor's copy of the conversation,
// appends one ConversationStateUpdateEvent per changed key through the
// writer (stored, fanned out once durable, like any event), and writes the
// new conversation to the store from a goroutine, at most one write at a
// time: changes made meanwhile are written together by the next one
// (stateStored). A command is answered only once both its events and its
// state are durable, so a GET after the answer reads the new state.
type control struct {
	version uint64 // bumped on every change of the state
	saved   uint64 // the last version the store confirmed
	writing bool   // a state write is under way
	after   []afterState
	rt      runtimeLink
}

// afterState is what to do once the log is durable through seq and the
// state through version: answer a command, broadcast full_state.
type afterState struct {
	seq, version uint64
	reply        *actor.PID
	msg          any    // the answer to reply
	broadcast    bool   // send every client a full_state
	frame        []byte // send every live client this frame (a StreamingDeltaEvent)
}

// busy reports whether anything still waits on this actor, which then
// must not be passivated.
func (c *control) busy() bool {
	return c.writing || len(c.after) > 0 || len(c.rt.waiting) > 0 || len(c.rt.asks) > 0
}

// change makes next the conversation's state: one ConversationStateUpdateEvent
// per key goes to the log, and the state to the store. then, when set, is
// queued to run once both are durable.
func (c *conversation) change(ctx actor.Context, next *core.Conversation, keys []string, then *afterState) {
	wasRunning := c.conv.Status() == core.StatusRunning
	c.conv, c.state = next, nil
	for _, key := range keys {
		value, err := next.StateValue(key)
		if err != nil {
			c.sys.log.Error("render state update", "conversation", c.id, "key", key, "err", err)
			continue
		}
		c.appendOwn(ctx, core.SourceEnvironment, core.KindStateUpdate, core.StateUpdateBody(key, value))
	}
	c.ctl.version++
	c.save(ctx)
	// A run that ends sends every client a full_state: upstream's clients
	// wait for that snapshot to return from run().
	ended := wasRunning && next.Status() != core.StatusRunning
	switch {
	case then != nil:
		a := *then
		a.broadcast = a.broadcast || ended
		c.queue(a)
	case ended:
		c.queue(afterState{broadcast: true})
	}
}

// appendOwn appends an event the actor makes itself (a state update, an
// error report), answered to nobody.
func (c *conversation) appendOwn(ctx actor.Context, source core.Source, kind string, body []byte) *core.Event {
	ev, err := c.enqueue(ctx, source, kind, "", body, "")
	if err != nil {
		if !c.gone {
			c.sys.log.Error("append the conversation's own event", "conversation", c.id, "kind", kind, "err", err)
		}
		return nil
	}
	c.pending = append(c.pending, pendingAppend{event: ev})
	return ev
}

// queue adds a, due once the log and the state are durable as they are now.
func (c *conversation) queue(a afterState) {
	a.seq, a.version = c.lastSeq, c.ctl.version
	c.ctl.after = append(c.ctl.after, a)
}

// save writes the state to the store from a goroutine unless a write is
// under way; stateStored then writes again if the state changed meanwhile.
func (c *conversation) save(ctx actor.Context) {
	if c.ctl.writing || c.gone {
		return
	}
	c.ctl.writing = true
	self, root, store, snap, v, epoch := ctx.Self(), ctx.ActorSystem().Root, c.sys.store, c.conv, c.ctl.version, c.epoch
	go func() {
		err := store.UpdateConversation(context.Background(), snap, epoch)
		root.Send(self, &stateStored{Version: v, Err: err})
	}()
}

// stateSaved takes a write's outcome. A failed write fails the commands
// waiting for it; a later change writes the whole state again (at once if
// one came during the failed write). A write refused because a newer
// activation owns the conversation (its epoch is stale) ends this one, as
// a fenced append does (stored): it wrote nothing, and the next use loads
// the owner's state afresh.
func (c *conversation) stateSaved(ctx actor.Context, m *stateStored) {
	c.ctl.writing = false
	if m.Err != nil {
		fenced := errors.Is(m.Err, core.ErrFenced)
		switch {
		case fenced && !c.gone:
			c.sys.metrics.fenced()
			c.sys.log.Error("write conversation state: a newer activation owns the conversation; replacing this one", "conversation", c.id, "err", m.Err)
		case !c.gone && !errors.Is(m.Err, core.ErrNotFound):
			c.sys.log.Error("write conversation state", "conversation", c.id, "err", m.Err)
		}
		keep := c.ctl.after[:0]
		for _, a := range c.ctl.after {
			if a.version <= m.Version && a.version > c.ctl.saved {
				c.reply(ctx, a.reply, &commandFailed{Err: fmt.Errorf("write conversation state: %w", m.Err)})
				continue
			}
			keep = append(keep, a)
		}
		c.ctl.after = keep
		switch {
		case c.gone:
		case fenced:
			c.end(ctx, core.DisconnectInternalError, m.Err)
		case c.ctl.version > m.Version:
			c.save(ctx) // changes made meanwhile: the next write carries them and those before
		}
		return
	}
	c.ctl.saved = max(c.ctl.saved, m.Version)
	if c.ctl.version > c.ctl.saved {
		c.save(ctx)
	}
}

// writeFailed follows a failed write of the log (stored): the events
// appended after its durable end are not in it and their Seq will be
// assigned again, so what waits on them is failed now rather than
// answered when other events reach those Seq. Every client then gets a
// full_state, which says what the lost state updates would have.
func (c *conversation) writeFailed(ctx actor.Context, err error) {
	keep := c.ctl.after[:0]
	for _, a := range c.ctl.after {
		if a.seq > c.durable {
			c.reply(ctx, a.reply, &commandFailed{Err: fmt.Errorf("append: %w", err)})
			continue
		}
		keep = append(keep, a)
	}
	c.ctl.after = keep
	out := c.ctl.rt.outbox[:0]
	for _, o := range c.ctl.rt.outbox {
		if o.seq <= c.durable {
			out = append(out, o)
		}
	}
	clear(c.ctl.rt.outbox[len(out):])
	c.ctl.rt.outbox = out
	c.queue(afterState{broadcast: true})
}

// progress does what became due: commands for the runtime whose events are
// durable and that it is ready for, then answers and broadcasts in order.
// handle calls it after every message.
func (c *conversation) progress(ctx actor.Context) {
	c.flushRuntime()
	n := 0
	for _, a := range c.ctl.after {
		if a.seq > c.durable || a.version > c.ctl.saved {
			break
		}
		if a.frame != nil {
			c.sendClients(a.frame)
		}
		if a.reply != nil {
			c.reply(ctx, a.reply, a.msg)
		}
		if a.broadcast {
			c.broadcastState()
		}
		n++
	}
	if n > 0 {
		clear(c.ctl.after[:n])
		c.ctl.after = c.ctl.after[n:]
	}
}

// broadcastState sends the full_state event to every client (not the
// runtime, which gets state frames). It is not stored, as upstream's is
// not.
func (c *conversation) broadcastState() {
	frame, err := c.stateFrame()
	if err != nil {
		c.sys.log.Error("render full_state", "conversation", c.id, "err", err)
		return
	}
	c.sendClients(frame)
}

// sendClients hands a frame that is not in the log to every live client
// (not the runtime, nor a client still replaying).
func (c *conversation) sendClients(frame []byte) {
	c.fan.sendLive(frame, c.isRuntime)
}

// appended follows a client's append: a user message returns a finished or
// stuck conversation to idle, titles an untitled one (upstream's fallback
// title: its first 50 characters), and, from a socket, runs the agent.
// before is the last Seq before the append, so a refused append is
// ignored.
func (c *conversation) appended(ctx actor.Context, m *appendEvent, before uint64) {
	if c.lastSeq == before || m.Source != core.SourceUser || m.Kind != core.KindMessage {
		return
	}
	next := c.conv
	var keys []string
	if next.ResetsOnMessage() {
		next, _ = core.WithStatus(next, core.StatusIdle)
		keys = append(keys, core.StateKeyExecutionState)
	}
	if next.Title == "" && !next.NoAutotitle {
		if title := core.AutoTitle(messageText(m.Body)); title != "" {
			next = next.Clone()
			next.Title = title
		}
	}
	if next != c.conv {
		// The append's answer waits for the new state too, so a GET after
		// it reads the title and status the message set.
		p := &c.pending[len(c.pending)-1]
		then := &afterState{reply: p.reply, msg: &eventAppended{Event: p.event}}
		p.reply = nil
		c.change(ctx, next, keys, then)
		c.sendState()
	}
	if m.Run {
		c.run(ctx, &runConversation{AllowRunning: true}, nil)
	}
}

// messageText is the text of a MessageEvent body.
func messageText(body []byte) string {
	var ev struct {
		LLM struct {
			Content []core.ContentPart `json:"content"`
		} `json:"llm_message"`
	}
	if json.Unmarshal(body, &ev) != nil {
		return ""
	}
	return core.MessageText(ev.LLM.Content)
}

// changeSettings applies a client's settings and answers once they are
// durable. The runtime gets the new state.
func (c *conversation) changeSettings(ctx actor.Context, m *changeSettings, sender *actor.PID) {
	if c.gone {
		c.reply(ctx, sender, &commandFailed{Err: c.goneErr})
		return
	}
	next, keys, err := core.ApplySettings(c.conv, m.Settings)
	if err != nil {
		c.reply(ctx, sender, &commandFailed{Err: err})
		return
	}
	c.change(ctx, next, keys, &afterState{reply: sender, msg: &commandDone{}})
	c.sendState()
}

// recoverRun runs once the actor loaded: a conversation stored as running
// has no runtime (every runtime detached when its previous actor stopped,
// or the server restarted), so it becomes error with a
// ConversationErrorEvent, as upstream's server does on restart.
func (c *conversation) recoverRun(ctx actor.Context) {
	if c.conv.Status() != core.StatusRunning {
		return
	}
	c.sys.log.Warn("conversation was running when its actor stopped; marking it error", "conversation", c.id)
	c.runLost(ctx, "The conversation was running when the server stopped or reloaded it; its agent runtime is gone. Start a runtime and run the conversation again.")
}

// runLost records that the run ended without its runtime: a
// ConversationErrorEvent, then execution_status error (and so a
// full_state for every client).
func (c *conversation) runLost(ctx actor.Context, detail string) {
	c.appendOwn(ctx, core.SourceEnvironment, core.KindConversationError, core.ErrorBody(core.CodeRuntimeDisconnected, detail))
	next, _ := core.WithStatus(c.conv, core.StatusError)
	c.change(ctx, next, []string{core.StateKeyExecutionState}, nil)
}
