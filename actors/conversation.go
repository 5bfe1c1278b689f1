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

// subscriber is one attached connection. While next is not zero it is
// replaying: next is the Seq it receives next, from the store, and live
// fan-out skips it until the replay reaches the end of the log.
type subscriber struct {
	pid       *actor.PID
	transport Transport
	next      uint64
}

// conversation is the actor of one conversation: the only writer of its log
// and the owner of its subscriber set. It assigns each event's ID, Seq and
// timestamp, seals it once, stores it, and hands the same bytes to every
// subscriber's Transport.
type conversation struct {
	sys     *System
	id      string
	lastSeq uint64
	lastTS  time.Time
	subs    []subscriber
	index   map[string]int // PID.Id -> position in subs
	gone    bool           // deleted, or missing from the store
	resume  *time.Timer    // pending resumeReplay, nil if none
}

func newConversation(s *System, id string) *conversation {
	return &conversation{sys: s, id: id, index: make(map[string]int)}
}

// Receive handles the conversation's messages. Store calls happen inline:
// the store is in memory for now (see the package doc).
func (c *conversation) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.load(ctx)
	case *attachConnection:
		c.attach(ctx, m)
	case *detachConnection:
		c.remove(m.Conn)
	case *actor.Terminated:
		c.remove(m.Who)
	case *appendEvent:
		ev, err := c.append(m.Source, m.Kind, m.Body)
		if err != nil {
			respond(ctx, &commandFailed{Err: err})
			return
		}
		respond(ctx, &eventAppended{Event: ev})
	case *deleteConversation:
		c.closeAll(ctx, core.DisconnectNotFound)
		c.gone = true
		respond(ctx, &conversationDeleted{})
	case *resumeReplay:
		c.resume = nil
		c.pumpAll(ctx)
	case *crashConversation:
		panic("conversation actor: crash requested by a test")
	case *actor.Stopping:
		// Stopped by a restart of the registry or after a panic: the
		// connections watch this actor and close with 1011.
		if c.resume != nil {
			c.resume.Stop()
		}
	}
}

// load reads where the log ends. A conversation that vanished from the
// store between the registry's check and now asks the registry to stop it.
func (c *conversation) load(ctx actor.Context) {
	bg := context.Background()
	last, err := c.sys.store.LastSeq(bg, c.id)
	if err == nil && last > 0 {
		var evs []*core.Event
		if evs, err = c.sys.store.Events(bg, c.id, last-1, 1); err == nil && len(evs) == 1 {
			c.lastTS = evs[0].Timestamp
		}
	}
	if err != nil {
		c.gone = true
		c.sys.log.Warn("conversation actor could not load its log", "conversation", c.id, "err", err)
		ctx.Send(ctx.Parent(), &conversationEnded{ConversationID: c.id, PID: ctx.Self()})
		return
	}
	c.lastSeq = last
}

// attach subscribes m.Conn, sends it the full_state frame and starts its
// replay, all in this one Receive. The replay reads the log by Seq up to
// wherever the log ends when it catches up, and live delivery starts only
// then, in the same Receive as the last replayed event: nothing is lost or
// sent twice, however many events are appended meanwhile.
func (c *conversation) attach(ctx actor.Context, m *attachConnection) {
	reject := func(d core.Disconnect) {
		m.Transport.Close(d)
		ctx.Send(m.Conn, &closeConnection{Reason: d})
	}
	if c.gone {
		reject(core.DisconnectNotFound)
		return
	}
	if len(c.subs) >= c.sys.limits.SubscribersPerConversation {
		reject(core.DisconnectTooMany)
		return
	}
	bg := context.Background()
	conv, err := c.sys.store.Conversation(bg, c.id)
	if errors.Is(err, core.ErrNotFound) {
		reject(core.DisconnectNotFound)
		return
	}
	if err != nil {
		c.sys.log.Error("attach: read conversation", "conversation", c.id, "err", err)
		reject(core.DisconnectInternalError)
		return
	}
	state, err := stateFrame(conv)
	if err != nil {
		c.sys.log.Error("attach: render full_state", "conversation", c.id, "err", err)
		reject(core.DisconnectInternalError)
		return
	}
	if !m.Transport.Send(state) {
		return // the transport is closing; its connection will stop itself
	}
	first, err := c.replayStart(m.Replay)
	var unknown *unknownEventError
	switch {
	case errors.As(err, &unknown):
		if frame, ferr := serverError(codeUnknownEventID, unknown.Error()); ferr == nil && !m.Transport.Send(frame) {
			return
		}
	case err != nil:
		c.sys.log.Error("attach: find replay start", "conversation", c.id, "err", err)
		reject(core.DisconnectInternalError)
		return
	}
	sub := subscriber{pid: m.Conn, transport: m.Transport}
	if first != 0 && first <= c.lastSeq {
		sub.next = first
	}
	c.index[m.Conn.Id] = len(c.subs)
	c.subs = append(c.subs, sub)
	ctx.Watch(m.Conn)
	ctx.Send(m.Conn, &connectionAttached{Conversation: ctx.Self()})
	if sub.next != 0 {
		c.pumpAll(ctx)
	}
}

// unknownEventError is an after_id that is not in the log.
type unknownEventError struct{ id string }

func (e *unknownEventError) Error() string {
	return fmt.Sprintf("event %q is not in this conversation; nothing was replayed", truncate(e.id, 64))
}

// replayStart returns the Seq of the first event r asks for, or 0 for none.
func (c *conversation) replayStart(r Replay) (uint64, error) {
	bg := context.Background()
	switch r.Mode {
	case ReplayNone:
		return 0, nil
	case ReplayAll:
		return 1, nil
	case ReplaySince:
		first, err := c.sys.store.FirstSeqAtOrAfter(bg, c.id, r.Since)
		if err != nil {
			return 0, fmt.Errorf("find events since %s: %w", r.Since.Format(core.TimestampLayout), err)
		}
		return first, nil
	case ReplayAfterID:
		ev, err := c.sys.store.EventByID(bg, c.id, r.AfterID)
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
		done, ok := c.pump(&c.subs[i])
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

// pump sends sub the next replayed events while its transport has room:
// up to half its queue bound, so live traffic and replay never trip the
// slow-consumer limit together. It reports whether the replay reached the
// end of the log (the subscriber is then live), and false in ok when the
// transport refused a frame or the store failed.
func (c *conversation) pump(sub *subscriber) (done, ok bool) {
	bl, paced := sub.transport.(Backlogger)
	for sub.next <= c.lastSeq {
		evs, err := c.sys.store.Events(context.Background(), c.id, sub.next-1, replayPage)
		if err != nil || len(evs) == 0 {
			c.sys.log.Error("replay: read events", "conversation", c.id, "after", sub.next-1, "err", err)
			sub.transport.Close(core.DisconnectInternalError)
			return false, false
		}
		for _, ev := range evs {
			if paced {
				if queued, limit := bl.Backlog(); queued > 0 && queued+len(ev.Raw) > limit/2 {
					return false, true
				}
			}
			if !sub.transport.Send(ev.Raw) {
				return false, false
			}
			sub.next = ev.Seq + 1
		}
	}
	sub.next = 0
	return true, true
}

// append assigns the envelope, seals the event once, stores it and fans the
// sealed bytes out to every subscriber. A subscriber whose transport refuses
// the frame is dropped: its transport is closing and its actor will stop.
func (c *conversation) append(source core.Source, kind string, body []byte) (*core.Event, error) {
	if c.gone {
		return nil, fmt.Errorf("conversation %s: %w", c.id, core.ErrNotFound)
	}
	ts := time.Now().UTC().Truncate(time.Microsecond)
	if ts.Before(c.lastTS) {
		ts = c.lastTS
	}
	ev := &core.Event{ID: core.NewID(), Seq: c.lastSeq + 1, Timestamp: ts, Source: source, Kind: kind, Body: body}
	if err := ev.Seal(); err != nil {
		return nil, fmt.Errorf("seal %s: %w", kind, err)
	}
	if err := c.sys.store.AppendEvents(context.Background(), c.id, []*core.Event{ev}); err != nil {
		return nil, fmt.Errorf("append %s: %w", kind, err)
	}
	c.lastSeq, c.lastTS = ev.Seq, ts
	for i := 0; i < len(c.subs); {
		if c.subs[i].next != 0 || c.subs[i].transport.Send(ev.Raw) {
			i++ // a replaying subscriber will read this event from the log
			continue
		}
		c.removeAt(i)
	}
	return ev, nil
}

// closeAll closes every subscriber's socket with d. The transport is closed
// directly, so the reason is set before any Terminated the connection might
// see, and the connection actor is told to stop.
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

// stateFrame renders the ConversationStateUpdateEvent "full_state" that
// every connection receives first.
func stateFrame(conv *core.Conversation) ([]byte, error) {
	body, err := core.StateBody(core.StateKeyFullState, conv)
	if err != nil {
		return nil, fmt.Errorf("render full_state: %w", err)
	}
	return frame(core.KindStateUpdate, body)
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
