package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// errStoppedUnconfirmed answers an append whose actor stopped before the
// writer confirmed it: the event may or may not be in the log.
var errStoppedUnconfirmed = errors.New("the conversation stopped before the event was confirmed stored")

// pendingAppend is an event handed to the writer and not yet durable, and
// whom to answer when it is.
type pendingAppend struct {
	event *core.Event
	reply *actor.PID
}

// stashed is a message that arrived before the actor loaded.
type stashed struct {
	msg    any
	sender *actor.PID
}

// conversation is the actor of one conversation: the only writer of its log
// and the owner of its subscriber set. It assigns each event's ID, Seq and
// timestamp, seals it once, hands it to the writer, and once the writer
// reports it durable hands the same bytes to every live subscriber's
// Transport and answers the append. It never touches the store in Receive:
// loading, replay reads and writes run in goroutines (or the writer) that
// answer with messages.
type conversation struct {
	sys      *System
	at       activation // where it runs: under the registry, or a cluster activation
	id       string
	epoch    uint64 // the ownership epoch its appends carry (fencing.go); 0 on a single node
	loaded   bool
	stash    []stashed
	held     []stashed          // a navigate waiting for the appends before it, and what came after (tree.go)
	conv     *core.Conversation // metadata, kept current as events land (conv.Head: the durable HEAD)
	state    []byte             // conv rendered as a full_state body; nil after conv changes
	head     core.Head          // the event tree's HEAD after the last Seq assigned (tree.go)
	lastSeq  uint64             // the last Seq assigned
	lastTS   time.Time
	durable  uint64 // the last Seq the writer confirmed
	gen      uint64 // append generation: moves on when a write fails (see stored)
	pending  []pendingAppend
	fan      *fanout              // the sockets attached here (fanout.go)
	gone     bool                 // deleted, missing from the store, or failed
	goneErr  error                // why, for appends
	received uint64               // messages the registry routed here
	idleAt   *time.Timer          // pending checkIdle, nil without passivation
	keys     map[string]*keyState // idempotency keys (idempotency.go)
	wire     map[string]bool      // senders of requests that came over the wire (wire.go)
	active   time.Time            // when the last message other than checkIdle came
	ctl      control              // state persistence and the agent runtime (state.go, runtime.go)
}

func newConversation(s *System, id string, at activation) *conversation {
	return &conversation{sys: s, id: id, at: at, fan: newFanout(id, s.store, s.log, s.metrics)}
}

// activation is where a conversation actor runs, and what that changes:
// under the local registry on a single node (local, below), or as the
// cluster's activation on the node that owns the conversation (cluster
// mode: placement.go starts it, fencing.go loads it, relay.go reaches the
// sockets of other nodes). The actor's own work, the log and the state,
// is the same either way.
type activation interface {
	// start is the actor's Started: it learns its identity if it has to.
	start(ctx actor.Context, c *conversation)
	// load reads what the actor starts from; it runs off the mailbox.
	load(store core.Store, id string) *conversationLoaded
	// release asks to be stopped, for good or because it is idle.
	release(ctx actor.Context, c *conversation, idle bool)
	// durable hands the appends that just became durable, in Seq order, to
	// the sockets other nodes hold.
	durable(ctx actor.Context, c *conversation, done []pendingAppend)
	// handle takes a message only this kind of activation knows, and
	// reports whether it did.
	handle(ctx actor.Context, c *conversation, msg any, sender *actor.PID) bool
	// busy reports whether other nodes follow the conversation.
	busy() bool
	// stopping tells the other nodes the activation is going away; code
	// is the close code for their sockets, 0 to attach again elsewhere.
	stopping(ctx actor.Context, c *conversation, code uint16)
}

// local is the single-node activation: the registry spawned it, and every
// socket of the conversation is on this node.
type local struct{}

func (local) start(actor.Context, *conversation) {}

// load reads the metadata and where the log ends: not the history, which
// replays read page by page when asked.
func (local) load(store core.Store, id string) *conversationLoaded {
	bg := context.Background()
	m := &conversationLoaded{}
	m.Conv, m.Err = store.Conversation(bg, id)
	if m.Err == nil {
		m.LastSeq, m.Err = store.LastSeq(bg, id)
	}
	if m.Err == nil {
		m.LastTS, m.Err = lastTimestamp(store, id, m.LastSeq)
	}
	if m.Err == nil {
		m.Conv, m.Err = withHead(store, m.Conv, m.LastSeq)
	}
	return m
}

// release asks the registry: an idle actor is stopped only if nothing was
// routed to it meanwhile (received); an ended one is forgotten.
func (local) release(ctx actor.Context, c *conversation, idle bool) {
	if idle {
		ctx.Send(ctx.Parent(), &conversationIdle{ConversationID: c.id, PID: ctx.Self(), Received: c.received})
		return
	}
	ctx.Send(ctx.Parent(), &conversationEnded{ConversationID: c.id, PID: ctx.Self()})
}

func (local) durable(actor.Context, *conversation, []pendingAppend)     {}
func (local) handle(actor.Context, *conversation, any, *actor.PID) bool { return false }
func (local) busy() bool                                                { return false }
func (local) stopping(actor.Context, *conversation, uint16)             {}

// lastTimestamp reads the timestamp of the log's last event, the floor of
// the next one's.
func lastTimestamp(store core.Store, id string, lastSeq uint64) (time.Time, error) {
	if lastSeq == 0 {
		return time.Time{}, nil
	}
	evs, err := store.Events(context.Background(), id, lastSeq-1, 1)
	if err != nil || len(evs) == 0 {
		return time.Time{}, err
	}
	return evs[0].Timestamp, nil
}

// Receive handles the conversation's messages. Until the load finishes,
// routed messages are stashed and then handled in order.
func (c *conversation) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *checkIdle, *checkEpoch, *epochChecked: // its own timers are not activity
	default:
		c.active = time.Now()
	}
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.at.start(ctx, c)
		c.startLoad(ctx)
	case *conversationLoaded:
		c.loadDone(ctx, m)
	case *routed:
		c.received++
		if !c.loaded {
			c.stash = append(c.stash, stashed{m.Msg, m.Sender})
			return
		}
		c.handle(ctx, m.Msg, m.Sender)
	case *checkIdle:
		c.idle(ctx)
	case *actor.Stopping:
		c.stopping(ctx)
	default:
		if !c.loaded {
			c.stash = append(c.stash, stashed{ctx.Message(), ctx.Sender()})
			return
		}
		c.handle(ctx, ctx.Message(), ctx.Sender())
	}
}

// handle handles one message once loaded; sender gets the answer.
func (c *conversation) handle(ctx actor.Context, msg any, sender *actor.PID) {
	if c.heldForNavigate(msg, sender) {
		return
	}
	switch m := msg.(type) {
	case *attachConnection:
		c.attach(ctx, m)
	case *detachConnection:
		c.fan.remove(m.Conn)
		c.runtimeDetached(ctx, m.Conn)
	case *appendEvent:
		before := c.lastSeq
		c.append(ctx, m, sender)
		c.appended(ctx, m, before)
	case *eventsStored:
		c.stored(ctx, m)
	case *keyResolved:
		c.keyLookedUp(ctx, m)
	case *replayResolved:
		c.fan.resolved(ctx, m, c.durable)
	case *replayRead:
		c.fan.readDone(ctx, m, c.durable)
	case *deleteConversation:
		c.fan.closeAll(ctx, core.DisconnectNotFound)
		c.at.stopping(ctx, c, core.CloseConversationNotFnd)
		c.gone, c.goneErr = true, fmt.Errorf("conversation %s: %w", c.id, core.ErrNotFound)
		c.reply(ctx, sender, &conversationDeleted{})
	case *resumeReplay:
		c.fan.resumed(ctx, c.durable)
	case *crashConversation:
		panic("conversation actor: crash requested by a test")
	default:
		if !c.at.handle(ctx, c, msg, sender) {
			c.handleControl(ctx, msg, sender)
		}
	}
	c.progress(ctx)
	c.navigateReady(ctx)
}

// startLoad reads what the actor starts from, off the mailbox (see
// activation.load).
func (c *conversation) startLoad(ctx actor.Context) {
	self, root, store, id, at := ctx.Self(), ctx.ActorSystem().Root, c.sys.store, c.id, c.at
	go func() { root.Send(self, at.load(store, id)) }()
}

// loadDone takes the loaded state and handles what was stashed meanwhile.
// A conversation missing from the store (or unreadable) refuses everything
// and asks the registry to forget it.
func (c *conversation) loadDone(ctx actor.Context, m *conversationLoaded) {
	c.loaded = true
	if m.Err != nil {
		c.gone, c.goneErr = true, fmt.Errorf("load conversation %s: %w", c.id, m.Err)
		if !errors.Is(m.Err, core.ErrNotFound) {
			// Unavailable: attaches are refused with 1013 and appends fail;
			// the next use spawns an actor that tries the load again.
			c.sys.log.Error("conversation actor could not load", "conversation", c.id, "err", m.Err)
		}
		c.at.release(ctx, c, false)
	} else {
		c.conv, c.lastSeq, c.durable, c.lastTS, c.epoch = m.Conv, m.LastSeq, m.LastSeq, m.LastTS, m.Epoch
		c.state, c.head = nil, m.Conv.Head
		c.armIdle(ctx, c.sys.conversations.IdleTimeout)
		c.recoverRun(ctx)
	}
	stash := c.stash
	c.stash = nil
	for _, s := range stash {
		c.handle(ctx, s.msg, s.sender)
	}
}

// armIdle schedules a checkIdle after d; d <= 0 (no idle_timeout) never
// passivates. The timer only sends a message: the actor's state is read in
// Receive. (protoactor's own ReceiveTimeout is not used: its timer writes
// the actor context from the timer's goroutine, a data race.)
func (c *conversation) armIdle(ctx actor.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.idleAt = time.AfterFunc(d, func() { root.Send(self, &checkIdle{}) })
}

// idle runs on checkIdle. After conversations.idle_timeout without a
// message, with no subscriber and nothing in flight, it offers to
// passivate; the registry stops it only if it routed nothing since
// (received), so no message is lost in the mailbox.
func (c *conversation) idle(ctx actor.Context) {
	timeout := c.sys.conversations.IdleTimeout
	if quiet := time.Since(c.active); quiet < timeout {
		c.armIdle(ctx, timeout-quiet)
		return
	}
	c.armIdle(ctx, timeout)
	if c.gone || c.fan.len() > 0 || len(c.pending) > 0 || c.fan.waiting() || c.ctl.busy() || c.at.busy() {
		return
	}
	c.at.release(ctx, c, true)
}

// stopping answers what can no longer be answered and closes the sockets
// still attached with 1011. (Connections do not watch this actor: protoactor
// keeps removed watchers' PIDs, each caching its process, in the watcher
// set's spare capacity, which would pin closed connections for as long as
// the conversation lives.)
func (c *conversation) stopping(ctx actor.Context) {
	c.fan.closeAll(ctx, core.DisconnectInternalError)
	c.at.stopping(ctx, c, 0)
	c.stopControl(ctx)
	c.fan.stop()
	if c.idleAt != nil {
		c.idleAt.Stop()
	}
	for _, p := range c.pending {
		c.reply(ctx, p.reply, &commandFailed{Err: errStoppedUnconfirmed})
	}
	c.pending = nil
	c.failHeld(ctx)
	for _, s := range c.stash {
		switch m := s.msg.(type) {
		case *attachConnection:
			m.Transport.Close(core.DisconnectInternalError)
			ctx.Send(m.Conn, &closeConnection{Reason: core.DisconnectInternalError})
		case *appendEvent, *deleteConversation:
			c.reply(ctx, s.sender, &commandFailed{Err: errStoppedUnconfirmed})
		}
	}
	c.stash = nil
}

// attach subscribes m.Conn and sends it the full_state frame (a runtime,
// its state frame), then starts the replay it asked for (fanout.go).
func (c *conversation) attach(ctx actor.Context, m *attachConnection) {
	reject := func(d core.Disconnect) {
		m.Transport.Close(d)
		ctx.Send(m.Conn, &closeConnection{Reason: d})
	}
	if c.gone {
		reject(goneDisconnect(c.goneErr))
		return
	}
	if c.fan.len() >= c.sys.limits.SubscribersPerConversation {
		reject(core.DisconnectTooMany)
		return
	}
	if m.Runtime && !c.acceptRuntime() {
		reject(disconnectRuntimeTaken)
		return
	}
	state, err := c.firstFrame(m)
	if err != nil {
		c.sys.log.Error("attach: render full_state", "conversation", c.id, "err", err)
		reject(core.DisconnectInternalError)
		return
	}
	if !m.Transport.Send(state) {
		return // the transport is closing; its connection will stop itself
	}
	c.fan.subscribe(ctx, m, c.durable)
	if m.Runtime {
		c.runtimeAttached(ctx, m)
	}
	ctx.Send(m.Conn, &connectionAttached{Conversation: ctx.Self()})
}

// goneDisconnect is how a socket is closed when its conversation is gone
// for err: 4004 when it does not exist, 1013 when the store could not be
// read, else 1011.
func goneDisconnect(err error) core.Disconnect {
	switch {
	case errors.Is(err, core.ErrNotFound):
		return core.DisconnectNotFound
	case errors.Is(err, core.ErrUnavailable):
		return core.DisconnectUnavailable
	}
	return core.DisconnectInternalError
}

// append assigns the envelope, seals the event once and hands it to the
// writer. The answer and the fan-out wait for the writer's eventsStored.
func (c *conversation) append(ctx actor.Context, m *appendEvent, sender *actor.PID) {
	if m.Key != "" && c.keyed(ctx, m.Key, m.CheckKey, m, sender) {
		return
	}
	ev, err := c.enqueue(ctx, m.Source, m.Kind, "", m.Body, m.Key)
	if err != nil {
		c.reply(ctx, sender, &commandFailed{Err: err})
		return
	}
	c.pending = append(c.pending, pendingAppend{event: ev, reply: sender})
	c.keyAppended(ev)
}

// enqueue assigns an event's envelope, seals it and hands it to the writer,
// with the idempotency key it was posted with ("" for none); the caller
// records it in pending. Its parent_id is parent (a runtime's), or else
// the HEAD's (tree.go); it becomes the HEAD if it is a tree node. An event
// that is no tree node (a state update) always gets the HEAD's, whatever
// parent it came with: its parent_id is what a reload reads the HEAD from.
func (c *conversation) enqueue(ctx actor.Context, source core.Source, kind, parent string, body []byte, key string) (*core.Event, error) {
	if c.gone {
		return nil, c.goneErr
	}
	ts := time.Now().UTC().Truncate(time.Microsecond)
	if ts.Before(c.lastTS) {
		ts = c.lastTS
	}
	if parent == "" || !core.IsTreeNode(kind) {
		parent = c.head.ParentFor(c.lastSeq)
	}
	ev := &core.Event{ID: core.NewEventID(), Seq: c.lastSeq + 1, Timestamp: ts, Source: source, Kind: kind, ParentID: parent, Body: body, IdempotencyKey: key}
	if err := ev.Seal(); err != nil {
		return nil, fmt.Errorf("seal %s: %w", kind, err)
	}
	if max := c.sys.limits.MaxEventBytes; max > 0 && len(ev.Raw) > max {
		return nil, &core.EventTooLargeError{Kind: kind, Size: len(ev.Raw), Max: max}
	}
	if !c.sys.writer.enqueue(writeRequest{actor: ctx.Self(), conversationID: c.id, event: ev, gen: c.gen, epoch: c.epoch}) {
		return nil, ErrShutdown
	}
	c.lastSeq, c.lastTS = ev.Seq, ts
	c.head = c.head.After(ev.ID, ev.Seq, kind)
	return ev, nil
}

// stored takes the writer's report. On success every pending event up to
// m.Through is durable: it is fanned out to the live subscribers, in Seq
// order, and its append is answered. A report from an earlier generation
// is for appends already failed, and is dropped.
//
// A failed write fails only the appends in flight; the sockets stay open.
// When the store could not write (it is unreachable, or the write failed),
// the log still ends at the last durable event: every pending append is
// failed, Seq assignment starts again after the durable end, and the
// generation moves on, so the writer's later reports about the failed
// events (which the store refuses, as they no longer continue the log) are
// told apart. When the store refused the write because the log is not
// where this actor thinks (another writer, a fenced epoch) or the
// conversation is gone, the actor cannot go on: it closes its sockets and
// asks to be replaced by one that reloads from the store.
func (c *conversation) stored(ctx actor.Context, m *eventsStored) {
	if m.Gen != c.gen || c.gone {
		return
	}
	if m.Err != nil {
		c.failPending(ctx, m.Err)
		c.lastSeq = c.durable
		c.headFailed()
		c.gen++
		c.keysFailed(ctx, m.Err)
		switch {
		case errors.Is(m.Err, core.ErrNotFound):
			c.sys.log.Warn("append events: the conversation is gone", "conversation", c.id, "err", m.Err)
			c.end(ctx, core.DisconnectNotFound, m.Err)
		case errors.Is(m.Err, core.ErrSeqConflict), errors.Is(m.Err, core.ErrFenced):
			if errors.Is(m.Err, core.ErrFenced) {
				c.sys.metrics.fenced()
			}
			c.sys.log.Error("append events: the log moved under this actor; replacing it", "conversation", c.id, "err", m.Err)
			c.end(ctx, core.DisconnectInternalError, m.Err)
		default:
			c.sys.log.Error("append events failed; the posts in flight are failed, the sockets stay", "conversation", c.id, "through", m.Through, "err", m.Err)
			c.writeFailed(ctx, m.Err)
		}
		return
	}
	n := 0
	var ts time.Time
	for n < len(c.pending) && c.pending[n].event.Seq <= m.Through {
		p := c.pending[n]
		c.durable, ts = p.event.Seq, p.event.Timestamp
		c.fan.deliver(p.event)
		c.reply(ctx, p.reply, &eventAppended{Event: p.event})
		c.keyDurable(ctx, p.event)
		n++
	}
	if n > 0 {
		c.at.durable(ctx, c, c.pending[:n])
		conv := c.conv.Clone()
		conv.UpdatedAt = ts
		for _, p := range c.pending[:n] {
			if p.event.Seq > conv.Head.Seq { // else a navigate after it moved the HEAD
				conv.Head = conv.Head.After(p.event.ID, p.event.Seq, p.event.Kind)
			}
		}
		clear(c.pending[:n])
		c.pending = c.pending[n:]
		c.conv, c.state = conv, nil
	}
}

// failPending answers every pending append with err.
func (c *conversation) failPending(ctx actor.Context, err error) {
	for _, p := range c.pending {
		c.reply(ctx, p.reply, &commandFailed{Err: fmt.Errorf("append: %w", err)})
	}
	c.pending = nil
}

// end makes the actor refuse everything from now on, closes its sockets
// with d, and asks the registry to forget it, so that the next use spawns
// an actor that loads the conversation afresh.
func (c *conversation) end(ctx actor.Context, d core.Disconnect, err error) {
	c.fan.closeAll(ctx, d)
	c.at.stopping(ctx, c, d.Code)
	c.gone, c.goneErr = true, fmt.Errorf("conversation %s: %w", c.id, err)
	c.at.release(ctx, c, false)
}

// reply answers a request this actor handled. A request that came over
// the wire (cluster mode) is answered in the wire's terms (wire.go).
func (c *conversation) reply(ctx actor.Context, to *actor.PID, msg any) {
	reply(ctx, to, c.toWire(to, msg))
}

// reply answers to, if the message had a sender.
func reply(ctx actor.Context, to *actor.PID, msg any) {
	if to != nil {
		ctx.Send(to, msg)
	}
}

// stateFrame renders the ConversationStateUpdateEvent "full_state" that
// every connection receives first; each frame gets its own id and
// timestamp.
func (c *conversation) stateFrame() ([]byte, error) {
	body, err := c.stateBody()
	if err != nil {
		return nil, err
	}
	return localFrame(core.KindStateUpdate, body), nil
}

// stateBody is the full_state body, rendered once per change of the
// metadata.
func (c *conversation) stateBody() ([]byte, error) {
	if c.state == nil {
		body, err := core.StateBody(core.StateKeyFullState, c.conv.FullState())
		if err != nil {
			return nil, fmt.Errorf("render full_state: %w", err)
		}
		c.state = body
	}
	return c.state, nil
}

// serverError renders a ServerErrorEvent for one client. It is not appended
// to the log.
func serverError(code, detail string) ([]byte, error) {
	return localFrame(core.KindServerError, core.ErrorBody(code, detail)), nil
}

// frame seals a one-client event from the environment.
func frame(kind string, body []byte) ([]byte, error) {
	ev := &core.Event{ID: core.NewID(), Timestamp: time.Now().UTC(), Source: core.SourceEnvironment, Kind: kind, Body: body}
	if err := ev.Seal(); err != nil {
		return nil, fmt.Errorf("seal %s: %w", kind, err)
	}
	return ev.Raw, nil
}

// localFrame is frame for a body rendered on this node (core.StateBody,
// core.ErrorBody), which is not checked again: every socket's full_state
// is made here.
func localFrame(kind string, body []byte) []byte {
	ev := &core.Event{ID: core.NewID(), Timestamp: time.Now().UTC(), Source: core.SourceEnvironment, Kind: kind, Body: body}
	ev.SealTrusted()
	return ev.Raw
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
