package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// codeUnknownEventID is the ServerErrorEvent code for an after_id that is
// not in the conversation's log.
const codeUnknownEventID = "unknown_event_id"

// replayPage is how many events a replay reads from the store at a time.
const replayPage = 256

// replayRetry is how soon a paced replay resumes once its socket's queue is
// half full.
const replayRetry = 5 * time.Millisecond

// errStoppedUnconfirmed answers an append whose actor stopped before the
// writer confirmed it: the event may or may not be in the log.
var errStoppedUnconfirmed = errors.New("the conversation stopped before the event was confirmed stored")

// subscriber is one attached connection.
//
// A subscriber is live when next is 0: it gets each event as it becomes
// durable. Otherwise it is replaying: next is the Seq it receives next,
// read from the store a page at a time off the mailbox (buf holds the page
// being sent, ahead the page after it, read while buf is sent, so that a
// store's round trip overlaps the sending; reading says a read from
// readFrom is under way), and live fan-out skips it until the replay
// reaches the durable end of the log. While resolving, its replay's start
// is being looked up (after_id, since) and it gets nothing yet.
type subscriber struct {
	pid       *actor.PID
	transport Transport
	next      uint64
	buf       []*core.Event
	ahead     []*core.Event
	reading   bool
	readFrom  uint64
	resolving bool
	floor     uint64 // with resolving: durable+1 when it attached
}

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
	id       string
	loaded   bool
	stash    []stashed
	conv     *core.Conversation // metadata, kept current as events land
	state    []byte             // conv rendered as a full_state body; nil after conv changes
	lastSeq  uint64             // the last Seq assigned
	lastTS   time.Time
	durable  uint64 // the last Seq the writer confirmed
	gen      uint64 // append generation: moves on when a write fails (see stored)
	pending  []pendingAppend
	subs     []subscriber
	index    map[string]int // PID.Id -> position in subs
	gone     bool           // deleted, missing from the store, or failed
	goneErr  error          // why, for appends
	received uint64         // messages the registry routed here
	resume   *time.Timer    // pending resumeReplay, nil if none
	idleAt   *time.Timer    // pending checkIdle, nil without passivation
	active   time.Time      // when the last message other than checkIdle came
	ctl      control        // state persistence and the agent runtime (state.go, runtime.go)
}

func newConversation(s *System, id string) *conversation {
	return &conversation{sys: s, id: id, index: make(map[string]int)}
}

// Receive handles the conversation's messages. Until the load finishes,
// routed messages are stashed and then handled in order.
func (c *conversation) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*checkIdle); !ok {
		c.active = time.Now()
	}
	switch m := ctx.Message().(type) {
	case *actor.Started:
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
	switch m := msg.(type) {
	case *attachConnection:
		c.attach(ctx, m)
	case *detachConnection:
		c.remove(m.Conn)
		c.runtimeDetached(ctx, m.Conn)
	case *appendEvent:
		before := c.lastSeq
		c.append(ctx, m, sender)
		c.appended(ctx, m, before)
	case *eventsStored:
		c.stored(ctx, m)
	case *replayResolved:
		c.resolved(ctx, m)
	case *replayRead:
		c.readDone(ctx, m)
	case *deleteConversation:
		c.closeAll(ctx, core.DisconnectNotFound)
		c.gone, c.goneErr = true, fmt.Errorf("conversation %s: %w", c.id, core.ErrNotFound)
		reply(ctx, sender, &conversationDeleted{})
	case *resumeReplay:
		c.resume = nil
		c.pumpAll(ctx)
	case *crashConversation:
		panic("conversation actor: crash requested by a test")
	default:
		c.handleControl(ctx, msg, sender)
	}
	c.progress(ctx)
}

// startLoad reads the metadata and where the log ends, off the mailbox:
// not the history, which replays read page by page when asked.
func (c *conversation) startLoad(ctx actor.Context) {
	self, root, store, id := ctx.Self(), ctx.ActorSystem().Root, c.sys.store, c.id
	go func() {
		bg := context.Background()
		m := &conversationLoaded{}
		m.Conv, m.Err = store.Conversation(bg, id)
		if m.Err == nil {
			m.LastSeq, m.Err = store.LastSeq(bg, id)
		}
		if m.Err == nil && m.LastSeq > 0 {
			var evs []*core.Event
			if evs, m.Err = store.Events(bg, id, m.LastSeq-1, 1); m.Err == nil && len(evs) == 1 {
				m.LastTS = evs[0].Timestamp
			}
		}
		root.Send(self, m)
	}()
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
		ctx.Send(ctx.Parent(), &conversationEnded{ConversationID: c.id, PID: ctx.Self()})
	} else {
		c.conv, c.lastSeq, c.durable, c.lastTS = m.Conv, m.LastSeq, m.LastSeq, m.LastTS
		c.state = nil
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
	if c.gone || len(c.subs) > 0 || len(c.pending) > 0 || c.resume != nil || c.ctl.busy() {
		return
	}
	ctx.Send(ctx.Parent(), &conversationIdle{ConversationID: c.id, PID: ctx.Self(), Received: c.received})
}

// stopping answers what can no longer be answered and closes the sockets
// still attached with 1011. (Connections do not watch this actor: protoactor
// keeps removed watchers' PIDs, each caching its process, in the watcher
// set's spare capacity, which would pin closed connections for as long as
// the conversation lives.)
func (c *conversation) stopping(ctx actor.Context) {
	c.closeAll(ctx, core.DisconnectInternalError)
	c.stopControl(ctx)
	if c.resume != nil {
		c.resume.Stop()
	}
	if c.idleAt != nil {
		c.idleAt.Stop()
	}
	for _, p := range c.pending {
		reply(ctx, p.reply, &commandFailed{Err: errStoppedUnconfirmed})
	}
	c.pending = nil
	for _, s := range c.stash {
		switch m := s.msg.(type) {
		case *attachConnection:
			m.Transport.Close(core.DisconnectInternalError)
			ctx.Send(m.Conn, &closeConnection{Reason: core.DisconnectInternalError})
		case *appendEvent, *deleteConversation:
			reply(ctx, s.sender, &commandFailed{Err: errStoppedUnconfirmed})
		}
	}
	c.stash = nil
}

// attach subscribes m.Conn and sends it the full_state frame. A connection
// that asked for no history is live at once; otherwise its replay starts
// (after a lookup off the mailbox for after_id and since). Live delivery to
// a replaying subscriber starts only when its replay reaches the durable end
// of the log, in the Receive that sends it the last replayed event, so
// nothing is lost or sent twice however many events land meanwhile.
func (c *conversation) attach(ctx actor.Context, m *attachConnection) {
	reject := func(d core.Disconnect) {
		m.Transport.Close(d)
		ctx.Send(m.Conn, &closeConnection{Reason: d})
	}
	if c.gone {
		d := core.DisconnectInternalError
		switch {
		case errors.Is(c.goneErr, core.ErrNotFound):
			d = core.DisconnectNotFound
		case errors.Is(c.goneErr, core.ErrUnavailable):
			d = core.DisconnectUnavailable
		}
		reject(d)
		return
	}
	if len(c.subs) >= c.sys.limits.SubscribersPerConversation {
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
	sub := subscriber{pid: m.Conn, transport: m.Transport}
	c.sys.metrics.replayStarted(m.Replay.Mode)
	switch m.Replay.Mode {
	case ReplayNone:
	case ReplayAll:
		sub.next = 1
	default:
		sub.resolving, sub.floor = true, c.durable+1
		self, root, store, id, r := ctx.Self(), ctx.ActorSystem().Root, c.sys.store, c.id, m.Replay
		go func() {
			first, err := replayStart(store, id, r)
			root.Send(self, &replayResolved{Conn: m.Conn, First: first, Err: err})
		}()
	}
	if sub.next > c.durable {
		sub.next = 0 // an empty log: nothing to replay
	}
	c.index[m.Conn.Id] = len(c.subs)
	c.subs = append(c.subs, sub)
	if m.Runtime {
		c.runtimeAttached(ctx, m)
	}
	ctx.Send(m.Conn, &connectionAttached{Conversation: ctx.Self()})
	if sub.next != 0 {
		c.pumpAll(ctx)
	}
}

// resolved starts the replay whose first Seq was looked up. Events that
// became durable during the lookup are replayed too (from floor), since
// live fan-out skipped the subscriber meanwhile.
func (c *conversation) resolved(ctx actor.Context, m *replayResolved) {
	i, ok := c.index[m.Conn.Id]
	if !ok || !c.subs[i].resolving {
		return
	}
	sub := &c.subs[i]
	sub.resolving = false
	first := m.First
	var unknown *unknownEventError
	switch {
	case errors.As(m.Err, &unknown):
		if frame, ferr := serverError(codeUnknownEventID, unknown.Error()); ferr == nil && !sub.transport.Send(frame) {
			c.removeAt(i)
			return
		}
		first = sub.floor
	case m.Err != nil:
		c.sys.log.Error("attach: find replay start", "conversation", c.id, "err", m.Err)
		sub.transport.Close(core.DisconnectInternalError)
		c.removeAt(i)
		return
	}
	sub.next = min(first, sub.floor)
	if sub.next > c.durable {
		sub.next = 0
		return
	}
	c.pumpAll(ctx)
}

// unknownEventError is an after_id that is not in the log.
type unknownEventError struct{ id string }

func (e *unknownEventError) Error() string {
	return fmt.Sprintf("event %q is not in this conversation; nothing was replayed", truncate(e.id, 64))
}

// replayStart returns the Seq of the first event r asks for. It reads the
// store's indexes and runs off the mailbox.
func replayStart(store core.Store, id string, r Replay) (uint64, error) {
	bg := context.Background()
	switch r.Mode {
	case ReplaySince:
		first, err := store.FirstSeqAtOrAfter(bg, id, r.Since)
		if err != nil {
			return 0, fmt.Errorf("find events since %s: %w", r.Since.Format(core.TimestampLayout), err)
		}
		return first, nil
	case ReplayAfterID:
		ev, err := store.EventByID(bg, id, r.AfterID)
		if errors.Is(err, core.ErrNotFound) {
			return 0, &unknownEventError{id: r.AfterID}
		}
		if err != nil {
			return 0, fmt.Errorf("find event %s: %w", r.AfterID, err)
		}
		return ev.Seq + 1, nil
	}
	return 0, fmt.Errorf("unknown replay mode %d", r.Mode)
}

// pumpAll moves every replaying subscriber along, and schedules another
// round if one had to wait for its socket to drain.
func (c *conversation) pumpAll(ctx actor.Context) {
	waiting := false
	for i := 0; i < len(c.subs); {
		if c.subs[i].next == 0 {
			i++
			continue
		}
		done, ok := c.pump(ctx, &c.subs[i])
		switch {
		case !ok:
			c.removeAt(i)
			continue
		case !done:
			waiting = true
		}
		i++
	}
	if waiting && c.resume == nil {
		self, root := ctx.Self(), ctx.ActorSystem().Root
		c.resume = time.AfterFunc(replayRetry, func() { root.Send(self, &resumeReplay{}) })
	}
}

// pump sends sub the replayed events it has in buf while its transport has
// room: up to half its queue bound, so live traffic and replay never trip
// the slow-consumer limit together. It keeps one page read ahead (the
// answer, replayRead, pumps again). It reports done false only when the
// socket must drain first, and ok false when the transport refused a
// frame.
func (c *conversation) pump(ctx actor.Context, sub *subscriber) (done, ok bool) {
	bl, paced := sub.transport.(Backlogger)
	for {
		if len(sub.buf) == 0 && len(sub.ahead) > 0 {
			sub.buf, sub.ahead = sub.ahead, nil
		}
		c.readAhead(ctx, sub)
		if len(sub.buf) == 0 {
			if sub.next > c.durable { // nothing can be in flight: reads start at or below durable
				sub.next, sub.buf = 0, nil // caught up: live from here
			}
			return true, true
		}
		ev := sub.buf[0]
		if paced {
			if queued, limit := bl.Backlog(); queued > 0 && queued+len(ev.Raw) > limit/2 {
				return false, true
			}
		}
		if !sub.transport.Send(ev.Raw) {
			return false, false
		}
		c.sys.metrics.replayed()
		sub.buf[0] = nil
		sub.buf = sub.buf[1:]
		sub.next = ev.Seq + 1
	}
}

// readAhead starts the read of the page after what sub holds, unless one
// is under way, one is held already, or the durable log has no more.
func (c *conversation) readAhead(ctx actor.Context, sub *subscriber) {
	if sub.reading || len(sub.ahead) > 0 {
		return
	}
	from := sub.next
	if n := len(sub.buf); n > 0 {
		from = sub.buf[n-1].Seq + 1
	}
	if from > c.durable {
		return
	}
	sub.reading, sub.readFrom = true, from
	self, root, store, id, conn := ctx.Self(), ctx.ActorSystem().Root, c.sys.store, c.id, sub.pid
	go func() {
		evs, err := store.Events(context.Background(), id, from-1, replayPage)
		root.Send(self, &replayRead{Conn: conn, Next: from, Events: evs, Err: err})
	}()
}

// readDone hands a read page to its subscriber: to send now if it has
// nothing left, else as the page ahead. Events past the durable end are
// dropped: they reach the subscriber by fan-out or by the next read.
func (c *conversation) readDone(ctx actor.Context, m *replayRead) {
	i, ok := c.index[m.Conn.Id]
	if !ok || !c.subs[i].reading || c.subs[i].readFrom != m.Next {
		return
	}
	sub := &c.subs[i]
	sub.reading = false
	if m.Err != nil || len(m.Events) == 0 || m.Events[0].Seq != m.Next {
		c.sys.log.Error("replay: read events", "conversation", c.id, "after", m.Next-1, "got", len(m.Events), "err", m.Err)
		sub.transport.Close(core.DisconnectInternalError)
		c.removeAt(i)
		return
	}
	evs := m.Events
	for len(evs) > 0 && evs[len(evs)-1].Seq > c.durable {
		evs = evs[:len(evs)-1]
	}
	if len(sub.buf) == 0 {
		sub.buf = evs
	} else {
		sub.ahead = evs
	}
	c.pumpAll(ctx)
}

// append assigns the envelope, seals the event once and hands it to the
// writer. The answer and the fan-out wait for the writer's eventsStored.
func (c *conversation) append(ctx actor.Context, m *appendEvent, sender *actor.PID) {
	ev, err := c.enqueue(ctx, m.Source, m.Kind, m.Body)
	if err != nil {
		reply(ctx, sender, &commandFailed{Err: err})
		return
	}
	c.pending = append(c.pending, pendingAppend{event: ev, reply: sender})
}

// enqueue assigns an event's envelope, seals it and hands it to the writer;
// the caller records it in pending.
func (c *conversation) enqueue(ctx actor.Context, source core.Source, kind string, body []byte) (*core.Event, error) {
	if c.gone {
		return nil, c.goneErr
	}
	ts := time.Now().UTC().Truncate(time.Microsecond)
	if ts.Before(c.lastTS) {
		ts = c.lastTS
	}
	ev := &core.Event{ID: core.NewEventID(), Seq: c.lastSeq + 1, Timestamp: ts, Source: source, Kind: kind, Body: body}
	if err := ev.Seal(); err != nil {
		return nil, fmt.Errorf("seal %s: %w", kind, err)
	}
	if max := c.sys.limits.MaxEventBytes; max > 0 && len(ev.Raw) > max {
		return nil, &core.EventTooLargeError{Kind: kind, Size: len(ev.Raw), Max: max}
	}
	if !c.sys.writer.enqueue(writeRequest{actor: ctx.Self(), conversationID: c.id, event: ev, gen: c.gen}) {
		return nil, ErrShutdown
	}
	c.lastSeq, c.lastTS = ev.Seq, ts
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
		c.gen++
		switch {
		case errors.Is(m.Err, core.ErrNotFound):
			c.sys.log.Warn("append events: the conversation is gone", "conversation", c.id, "err", m.Err)
			c.end(ctx, core.DisconnectNotFound, m.Err)
		case errors.Is(m.Err, core.ErrSeqConflict), errors.Is(m.Err, core.ErrFenced):
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
		c.fanOut(p.event)
		reply(ctx, p.reply, &eventAppended{Event: p.event})
		c.pending[n] = pendingAppend{}
		n++
	}
	if n > 0 {
		c.pending = c.pending[n:]
		conv := c.conv.Clone()
		conv.UpdatedAt = ts
		c.conv, c.state = conv, nil
	}
}

// failPending answers every pending append with err.
func (c *conversation) failPending(ctx actor.Context, err error) {
	for _, p := range c.pending {
		reply(ctx, p.reply, &commandFailed{Err: fmt.Errorf("append: %w", err)})
	}
	c.pending = nil
}

// end makes the actor refuse everything from now on, closes its sockets
// with d, and asks the registry to forget it, so that the next use spawns
// an actor that loads the conversation afresh.
func (c *conversation) end(ctx actor.Context, d core.Disconnect, err error) {
	c.closeAll(ctx, d)
	c.gone, c.goneErr = true, fmt.Errorf("conversation %s: %w", c.id, err)
	ctx.Send(ctx.Parent(), &conversationEnded{ConversationID: c.id, PID: ctx.Self()})
}

// fanOut hands a durable event's bytes to every live subscriber. One whose
// transport refuses the frame is dropped: its transport is closing and its
// actor will stop.
func (c *conversation) fanOut(ev *core.Event) {
	defer c.sys.metrics.fannedOut(time.Now())
	for i := 0; i < len(c.subs); {
		s := &c.subs[i]
		if s.next != 0 || s.resolving || s.transport.Send(ev.Raw) {
			i++ // a replaying subscriber will read this event from the log
			continue
		}
		c.removeAt(i)
	}
}

// closeAll closes every subscriber's socket with d. The transport is closed
// directly, so the reason is set before the connection actor stops for any
// other cause, and the connection actor is told to stop.
func (c *conversation) closeAll(ctx actor.Context, d core.Disconnect) {
	for _, s := range c.subs {
		s.transport.Close(d)
		ctx.Send(s.pid, &closeConnection{Reason: d})
	}
	c.subs = nil
	clear(c.index)
}

func (c *conversation) remove(pid *actor.PID) {
	if i, ok := c.index[pid.Id]; ok {
		c.removeAt(i)
	}
}

// removeAt drops subs[i] by moving the last subscriber into its place.
func (c *conversation) removeAt(i int) {
	delete(c.index, c.subs[i].pid.Id)
	last := len(c.subs) - 1
	if i != last {
		c.subs[i] = c.subs[last]
		c.index[c.subs[i].pid.Id] = i
	}
	c.subs[last] = subscriber{}
	c.subs = c.subs[:last]
}

// reply answers to, if the message had a sender.
func reply(ctx actor.Context, to *actor.PID, msg any) {
	if to != nil {
		ctx.Send(to, msg)
	}
}

// stateFrame renders the ConversationStateUpdateEvent "full_state" that
// every connection receives first. The body is rendered once per change of
// the metadata; each frame still gets its own id and timestamp.
func (c *conversation) stateFrame() ([]byte, error) {
	if c.state == nil {
		body, err := core.StateBody(core.StateKeyFullState, c.conv.FullState())
		if err != nil {
			return nil, fmt.Errorf("render full_state: %w", err)
		}
		c.state = body
	}
	return frame(core.KindStateUpdate, c.state)
}

// serverError renders a ServerErrorEvent for one client. It is not appended
// to the log.
func serverError(code, detail string) ([]byte, error) {
	return frame(core.KindServerError, core.ErrorBody(code, detail))
}

// frame seals a one-client event from the environment.
func frame(kind string, body []byte) ([]byte, error) {
	ev := &core.Event{ID: core.NewID(), Timestamp: time.Now().UTC(), Source: core.SourceEnvironment, Kind: kind, Body: body}
	if err := ev.Seal(); err != nil {
		return nil, fmt.Errorf("seal %s: %w", kind, err)
	}
	return ev.Raw, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
