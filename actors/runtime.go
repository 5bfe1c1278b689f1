package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// The conversation actor's side of its agent runtime (docs/runtime.md).
//
// A runtime attaches like a client (attachConnection, with Runtime set) and
// is a subscriber: it gets the replay it asked for and every event as it
// becomes durable. Its first frame is a state frame (the conversation with
// its secrets) instead of full_state. At most one runtime is attached; a
// second is closed with 1013 and retries.
//
// Commands for the runtime (run, pause, ask_agent, ...) wait in the outbox
// until the log is durable up to where they were issued and the runtime's
// replay has caught up, so it always sees the events a command refers to
// (the user message before its run) first. A command that needs a runtime
// when none is attached waits up to conversations.runtime_wait for one
// (runtimeWaitOver). A command the runtime answers waits up to
// conversations.runtime_reply_timeout (runtimeReplyOver).
//
// When the runtime detaches during a run, the conversation records a
// ConversationErrorEvent and execution_status error, and its clients get a
// full_state; they stay attached, and the next runtime to attach serves
// the conversation.

// disconnectRuntimeTaken closes a second runtime's socket.
var disconnectRuntimeTaken = core.Disconnect{Code: core.CloseTryAgainLater, Reason: "Another agent runtime is attached to this conversation"}

// runtimeLink is the conversation's attached runtime and its commands.
type runtimeLink struct {
	pid       *actor.PID // the runtime's connection; nil when none is attached
	transport Transport
	outbox    []outCommand
	waiting   []waitingCommand      // commands waiting for a runtime to attach
	asks      map[string]pendingAsk // commands waiting for the runtime's reply, by ID
	tokens    uint64
}

// outCommand is a frame for the runtime, due once the log is durable
// through seq.
type outCommand struct {
	seq   uint64
	frame []byte
}

// waitingCommand is a command parked until a runtime attaches.
type waitingCommand struct {
	token  uint64
	msg    any
	sender *actor.PID
	timer  *time.Timer
	wait   time.Duration
}

// pendingAsk is a command whose reply the runtime owes.
type pendingAsk struct {
	command string
	sender  *actor.PID
	timer   *time.Timer
	timeout time.Duration
}

// handleControl handles the control plane's messages (handle's default).
func (c *conversation) handleControl(ctx actor.Context, msg any, sender *actor.PID) {
	switch m := msg.(type) {
	case *runConversation:
		c.run(ctx, m, sender)
	case *pauseConversation:
		c.pause(ctx, m, sender)
	case *changeSettings:
		c.changeSettings(ctx, m, sender)
	case *rejectPending:
		c.rejectPending(ctx, m, sender)
	case *askRuntime:
		c.ask(ctx, m, sender)
	case *publishEvent:
		c.publish(ctx, m, sender)
	case *navigateConversation:
		c.navigate(ctx, m, sender)
	case *runtimeReplied:
		c.replied(ctx, m)
	case *stateStored:
		c.stateSaved(ctx, m)
	case *runtimeWaitOver:
		c.waitOver(ctx, m.Token)
	case *runtimeReplyOver:
		if a, ok := c.ctl.rt.asks[m.ID]; ok {
			delete(c.ctl.rt.asks, m.ID)
			c.reply(ctx, a.sender, &commandFailed{Err: &core.RuntimeTimeoutError{Command: a.command, Waited: a.timeout}})
		}
	}
}

// isRuntime reports whether pid is the attached runtime's connection.
func (c *conversation) isRuntime(pid *actor.PID) bool {
	return c.ctl.rt.pid != nil && c.ctl.rt.pid.Equal(pid)
}

// acceptRuntime reports whether a runtime may attach: none is attached.
func (c *conversation) acceptRuntime() bool { return c.ctl.rt.pid == nil }

// firstFrame is what an attaching connection gets first: full_state, or
// for a runtime the state frame with its secrets.
func (c *conversation) firstFrame(m *attachConnection) ([]byte, error) {
	if !m.Runtime {
		return c.stateFrame()
	}
	return c.runtimeStateFrame()
}

func (c *conversation) runtimeStateFrame() ([]byte, error) {
	return core.EncodeJSON(core.StateFrame{Type: core.FrameTypeState, ConversationID: c.id, State: c.conv.RuntimeState()})
}

// runtimeAttached records the runtime that attach subscribed, and hands it
// the commands that waited for one.
func (c *conversation) runtimeAttached(ctx actor.Context, m *attachConnection) {
	c.ctl.rt.pid, c.ctl.rt.transport = m.Conn, m.Transport
	c.sys.log.Info("agent runtime attached", "conversation", c.id)
	waiting := c.ctl.rt.waiting
	c.ctl.rt.waiting = nil
	for _, w := range waiting {
		w.timer.Stop()
		c.handleControl(ctx, w.msg, w.sender)
	}
}

// runtimeDetached runs when a connection detaches: if it is the runtime,
// its commands are dropped, the replies it owed fail, and a run it was
// doing is reported lost.
func (c *conversation) runtimeDetached(ctx actor.Context, pid *actor.PID) {
	if !c.isRuntime(pid) {
		return
	}
	rt := &c.ctl.rt
	rt.pid, rt.transport, rt.outbox = nil, nil, nil
	for id, a := range rt.asks {
		a.timer.Stop()
		c.reply(ctx, a.sender, &commandFailed{Err: core.ErrRuntimeLost})
		delete(rt.asks, id)
	}
	if c.gone {
		return
	}
	c.sys.log.Info("agent runtime detached", "conversation", c.id, "execution_status", c.conv.Status())
	if c.conv.Status() == core.StatusRunning {
		c.runLost(ctx, core.DetailRuntimeDisconnected)
	}
}

// sendCommand queues a frame for the runtime behind the events appended so
// far.
func (c *conversation) sendCommand(f core.CommandFrame) {
	if c.ctl.rt.pid == nil {
		return
	}
	f.Type = core.FrameTypeCommand
	frame, err := core.EncodeJSON(f)
	if err != nil {
		c.sys.log.Error("render runtime command", "conversation", c.id, "command", f.Command, "err", err)
		return
	}
	c.ctl.rt.outbox = append(c.ctl.rt.outbox, outCommand{seq: c.lastSeq, frame: frame})
}

// sendState queues a state frame for the runtime, after a change of the
// settings it runs with.
func (c *conversation) sendState() {
	if c.ctl.rt.pid == nil {
		return
	}
	frame, err := c.runtimeStateFrame()
	if err != nil {
		c.sys.log.Error("render runtime state", "conversation", c.id, "err", err)
		return
	}
	c.ctl.rt.outbox = append(c.ctl.rt.outbox, outCommand{seq: c.lastSeq, frame: frame})
}

// flushRuntime sends the runtime the commands that are due: their events
// are durable and its replay has caught up.
func (c *conversation) flushRuntime() {
	rt := &c.ctl.rt
	if rt.pid == nil || len(rt.outbox) == 0 {
		return
	}
	if !c.fan.live(rt.pid) {
		return
	}
	n := 0
	for _, o := range rt.outbox {
		if o.seq > c.durable {
			break
		}
		if !rt.transport.Send(o.frame) {
			n = len(rt.outbox) // closing: its connection detaches soon
			break
		}
		n++
	}
	clear(rt.outbox[:n])
	rt.outbox = rt.outbox[n:]
}

// park keeps a command until a runtime attaches, for at most wait; without
// a wait it fails at once.
func (c *conversation) park(ctx actor.Context, msg any, sender *actor.PID, wait time.Duration) {
	if wait <= 0 {
		c.reply(ctx, sender, &commandFailed{Err: &core.NoRuntimeError{ConversationID: c.id}})
		return
	}
	c.ctl.rt.tokens++
	token := c.ctl.rt.tokens
	self, root := ctx.Self(), ctx.ActorSystem().Root
	timer := time.AfterFunc(wait, func() { root.Send(self, &runtimeWaitOver{Token: token}) })
	c.ctl.rt.waiting = append(c.ctl.rt.waiting, waitingCommand{token: token, msg: msg, sender: sender, timer: timer, wait: wait})
}

// waitOver fails the parked command token: no runtime came.
func (c *conversation) waitOver(ctx actor.Context, token uint64) {
	for i, w := range c.ctl.rt.waiting {
		if w.token == token {
			c.ctl.rt.waiting = append(c.ctl.rt.waiting[:i], c.ctl.rt.waiting[i+1:]...)
			c.reply(ctx, w.sender, &commandFailed{Err: &core.NoRuntimeError{ConversationID: c.id, Waited: w.wait}})
			return
		}
	}
}

// run starts a run: execution_status running, then the run command. A
// message with no sender (a client's socket message) never waits or
// fails.
func (c *conversation) run(ctx actor.Context, m *runConversation, sender *actor.PID) {
	switch {
	case c.gone:
		c.reply(ctx, sender, &commandFailed{Err: c.goneErr})
	case c.conv.Status() == core.StatusRunning:
		if m.AllowRunning {
			c.reply(ctx, sender, &commandDone{})
		} else {
			c.reply(ctx, sender, &commandFailed{Err: core.ErrAlreadyRunning})
		}
	case c.ctl.rt.pid == nil:
		if sender != nil {
			c.park(ctx, m, sender, m.Wait)
		}
	default:
		next, _ := core.WithStatus(c.conv, core.StatusRunning)
		c.change(ctx, next, []string{core.StateKeyExecutionState}, &afterState{reply: sender, msg: &commandDone{}})
		c.sendCommand(core.CommandFrame{Command: core.CommandRun})
	}
}

// pause pauses or interrupts: an idle or running conversation becomes
// paused with a PauseEvent or InterruptEvent, the runtime is told, and
// every client gets a full_state, as upstream's server does.
func (c *conversation) pause(ctx actor.Context, m *pauseConversation, sender *actor.PID) {
	if c.gone {
		c.reply(ctx, sender, &commandFailed{Err: c.goneErr})
		return
	}
	kind, command := core.KindPause, core.CommandPause
	if m.Interrupt {
		kind, command = core.KindInterrupt, core.CommandInterrupt
	}
	then := &afterState{reply: sender, msg: &commandDone{}, broadcast: true}
	if c.conv.Pausable() {
		c.appendOwn(ctx, core.SourceUser, kind, nil)
		next, _ := core.WithStatus(c.conv, core.StatusPaused)
		c.change(ctx, next, []string{core.StateKeyExecutionState}, then)
	} else {
		c.queue(*then)
	}
	c.sendCommand(core.CommandFrame{Command: command})
}

// rejectPending forwards a rejection of the pending actions to the
// runtime, which records them rejected and reports the status.
func (c *conversation) rejectPending(ctx actor.Context, m *rejectPending, sender *actor.PID) {
	switch {
	case c.gone:
		c.reply(ctx, sender, &commandFailed{Err: c.goneErr})
	case c.ctl.rt.pid == nil:
		c.park(ctx, m, sender, m.Wait)
	default:
		params, _ := core.EncodeJSON(struct {
			Accept bool   `json:"accept"`
			Reason string `json:"reason"`
		}{false, m.Reason})
		c.sendCommand(core.CommandFrame{Command: core.CommandRespondToConfirmation, Params: params})
		c.queue(afterState{reply: sender, msg: &commandDone{}})
	}
}

// ask forwards a command the runtime answers.
func (c *conversation) ask(ctx actor.Context, m *askRuntime, sender *actor.PID) {
	switch {
	case c.gone:
		c.reply(ctx, sender, &commandFailed{Err: c.goneErr})
		return
	case c.ctl.rt.pid == nil:
		c.park(ctx, m, sender, m.Wait)
		return
	}
	id := core.NewID()
	self, root := ctx.Self(), ctx.ActorSystem().Root
	timer := time.AfterFunc(m.Timeout, func() { root.Send(self, &runtimeReplyOver{ID: id}) })
	if c.ctl.rt.asks == nil {
		c.ctl.rt.asks = make(map[string]pendingAsk)
	}
	c.ctl.rt.asks[id] = pendingAsk{command: m.Command, sender: sender, timer: timer, timeout: m.Timeout}
	c.sendCommand(core.CommandFrame{Command: m.Command, ID: id, Params: m.Params})
}

// replied answers the command the runtime replied to. A reply nobody waits
// for (late, or unknown) earns the runtime an error frame.
func (c *conversation) replied(ctx actor.Context, m *runtimeReplied) {
	a, ok := c.ctl.rt.asks[m.ID]
	if !ok || !c.isRuntime(m.Conn) {
		if c.isRuntime(m.Conn) {
			if f, err := core.EncodeJSON(core.ErrorFrame{Type: core.FrameTypeError, Code: core.CodeUnknownReply,
				Detail: "no command with this id waits for a reply (it timed out, or the id is wrong)"}); err == nil {
				c.ctl.rt.transport.Send(f)
			}
		}
		return
	}
	delete(c.ctl.rt.asks, m.ID)
	a.timer.Stop()
	c.reply(ctx, a.sender, &runtimeAnswered{Reply: m.Reply})
}

// publish stores and fans out a runtime's event. A state update is applied
// to the conversation first; one that changes nothing is answered without
// being stored, as upstream emits no event for an unchanged field. A
// StreamingDeltaEvent is fanned out and never stored. A publish with a key
// (one a forwarding node made, cluster mode) that finds its key's event is
// answered with it and stores nothing (idempotency.go).
func (c *conversation) publish(ctx actor.Context, m *publishEvent, sender *actor.PID) {
	fail := func(err error) { c.reply(ctx, sender, &publishFailed{Ref: m.Ref, Err: err}) }
	if c.gone {
		fail(c.goneErr)
		return
	}
	p := m.Event
	if p.Ephemeral() {
		ev, err := c.ephemeral(p)
		if err != nil {
			fail(err)
			return
		}
		c.queue(afterState{frame: ev.Raw, reply: sender, msg: &eventPublished{Ref: m.Ref, Event: ev}})
		return
	}
	// A state update is not keyed: applying it again is a no-op when the
	// first attempt's state was saved (it changes nothing, and is answered
	// without storing), and applies it when the first attempt's event was
	// stored but its owner stopped before saving the state, which a key
	// would answer as done.
	key := m.Key
	if p.Kind == core.KindStateUpdate {
		key = ""
	}
	if key != "" && c.keyed(ctx, key, m.CheckKey, m, sender) {
		return
	}
	var next *core.Conversation
	if p.Kind == core.KindStateUpdate {
		var changed bool
		var err error
		if next, changed, err = core.ApplyRuntimeState(c.conv, p.StateKey, p.StateValue); err != nil {
			fail(err)
			return
		}
		if !changed && p.StateKey != core.StateKeyGoal {
			c.reply(ctx, sender, &eventPublished{Ref: m.Ref})
			return
		}
	}
	ev, err := c.enqueue(ctx, p.Source, p.Kind, p.ParentID, p.Body, key)
	if err != nil {
		fail(err)
		return
	}
	c.pending = append(c.pending, pendingAppend{event: ev})
	c.keyAppended(ev)
	then := &afterState{reply: sender, msg: &eventPublished{Ref: m.Ref, Event: ev}}
	if next != nil && next != c.conv {
		c.change(ctx, next, nil, then)
		return
	}
	c.queue(*then)
}

// ephemeral seals a StreamingDeltaEvent, which goes to the live clients
// behind the events published before it, never to the log.
func (c *conversation) ephemeral(p *core.Published) (*core.Event, error) {
	ev := &core.Event{ID: core.NewEventID(), Timestamp: time.Now().UTC(), Source: p.Source, Kind: p.Kind, Body: p.Body}
	if err := ev.Seal(); err != nil {
		return nil, err
	}
	if max := c.sys.limits.MaxEventBytes; max > 0 && len(ev.Raw) > max {
		return nil, &core.EventTooLargeError{Kind: p.Kind, Size: len(ev.Raw), Max: max}
	}
	return ev, nil
}

// stopControl answers, as the actor stops, every command still waiting.
func (c *conversation) stopControl(ctx actor.Context) {
	failed := &commandFailed{Err: errStoppedUnconfirmed}
	for _, w := range c.ctl.rt.waiting {
		w.timer.Stop()
		c.reply(ctx, w.sender, failed)
	}
	for _, a := range c.ctl.rt.asks {
		a.timer.Stop()
		c.reply(ctx, a.sender, failed)
	}
	for _, a := range c.ctl.after {
		c.reply(ctx, a.reply, failed)
	}
	c.ctl = control{}
}
