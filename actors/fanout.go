package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// codeUnknownEventID is the ServerErrorEvent code for an after_id that is
// not in the conversation's log.
const codeUnknownEventID = "unknown_event_id"

// replayPage is how many events a replay reads from the store at a time.
const replayPage = 256

// storeReadTimeout bounds each read a replay or a gap repair makes: a
// store call that hangs (a half-open database connection, a pool starved
// in a storm) fails instead, and its subscriber is closed with 1011 (or
// the relay's read retried), so a socket never waits silently.
// A variable for the tests.
var storeReadTimeout = 10 * time.Second

// replayRetry is how soon a paced replay resumes once its socket's queue is
// half full.
const replayRetry = 5 * time.Millisecond

// fanout is the local sockets that follow one conversation's log: which
// connections are attached, where each one's replay stands, and handing
// each durable event's bytes to every live one. The conversation actor
// holds one for its sockets; in cluster mode a node's relay holds one for
// that node's sockets (relay.go). The actor holding it passes durable, the
// last Seq it knows to be in the store, and routes the replay messages
// (replayResolved, replayRead, resumeReplay) to it.
//
// Live delivery to a replaying subscriber starts only when its replay
// reaches the durable end of the log, in the Receive that sends it the last
// replayed event, so nothing is lost or sent twice however many events land
// meanwhile. Replays read the store off the mailbox, a page at a time, with
// the next page read while the current one is sent.
type fanout struct {
	id     string // the conversation
	store  core.Store
	log    *slog.Logger
	subs   []subscriber
	index  map[string]int // PID.Id -> position in subs
	resume *time.Timer    // pending resumeReplay, nil if none
	tail   tail           // the last events delivered (tail.go)
	m      *metrics       // nil measures nothing
}

func newFanout(id string, store core.Store, log *slog.Logger, m *metrics) *fanout {
	return &fanout{id: id, store: store, log: log, index: make(map[string]int), m: m}
}

// subscriber is one attached connection.
//
// A subscriber is live when replay is nil: it gets each event as it
// becomes durable. Otherwise it is replaying, and live fan-out skips it
// until its replay reaches the durable end of the log. The struct is kept
// small, the replay's state behind a pointer, since delivering an event
// walks every subscriber of the conversation.
type subscriber struct {
	pid       *actor.PID
	transport Transport
	seen      uint64       // the last Seq it has: nothing at or below it is sent again
	replay    *replayState // nil once live
}

// replayState is a replaying subscriber's. next is the Seq it receives
// next, read from the store a page at a time off the mailbox (buf holds
// the page being sent, ahead the page after it, read while buf is sent, so
// that a store's round trip overlaps the sending; reading says a read from
// readFrom is under way). While resolving, the replay's start is being
// looked up (after_id, since) and the subscriber gets nothing yet.
type replayState struct {
	next      uint64
	buf       []*core.Event
	ahead     []*core.Event
	reading   bool
	readFrom  uint64
	resolving bool
	floor     uint64 // with resolving: durable+1 when it attached
}

// len is how many connections are attached.
func (f *fanout) len() int { return len(f.subs) }

// live reports whether pid is attached and receiving live events (its
// replay, if any, is done).
func (f *fanout) live(pid *actor.PID) bool {
	i, ok := f.index[pid.Id]
	return ok && f.subs[i].replay == nil
}

// subscribe adds m.Conn, which got its first frame already, and starts the
// replay it asked for. A connection that asked for no history is live at
// once; otherwise its replay starts (after a lookup off the mailbox for
// after_id and since).
func (f *fanout) subscribe(ctx actor.Context, m *attachConnection, durable uint64) {
	sub := subscriber{pid: m.Conn, transport: m.Transport}
	f.m.replayStarted(m.Replay.Mode)
	switch m.Replay.Mode {
	case ReplayNone:
		sub.seen = durable
	case ReplayAll:
		if durable > 0 { // else an empty log: nothing to replay
			sub.replay = &replayState{next: 1}
		}
	default:
		if ev, ok := f.tail.byID(m.Replay.AfterID); m.Replay.Mode == ReplayAfterID && ok { // no lookup: the client missed only what the tail holds
			sub.seen = ev.Seq
			if ev.Seq < durable {
				sub.replay = &replayState{next: ev.Seq + 1}
			}
			break
		}
		sub.replay = &replayState{resolving: true, floor: durable + 1}
		self, root, store, id, r := ctx.Self(), ctx.ActorSystem().Root, f.store, f.id, m.Replay
		go func() {
			first, err := replayStart(store, id, r)
			root.Send(self, &replayResolved{Conn: m.Conn, First: first, Err: err})
		}()
	}
	f.index[m.Conn.Id] = len(f.subs)
	f.subs = append(f.subs, sub)
	if sub.replay != nil && !sub.replay.resolving {
		f.pumpAll(ctx, durable)
	}
}

// resolved starts the replay whose first Seq was looked up. Events that
// became durable during the lookup are replayed too (from floor), since
// live fan-out skipped the subscriber meanwhile.
func (f *fanout) resolved(ctx actor.Context, m *replayResolved, durable uint64) {
	i, ok := f.index[m.Conn.Id]
	if !ok || f.subs[i].replay == nil || !f.subs[i].replay.resolving {
		return
	}
	sub := &f.subs[i]
	r := sub.replay
	r.resolving = false
	first := m.First
	var unknown *unknownEventError
	switch {
	case errors.As(m.Err, &unknown):
		if frame, ferr := serverError(codeUnknownEventID, unknown.Error()); ferr == nil && !sub.transport.Send(frame) {
			f.removeAt(i)
			return
		}
		first = r.floor
	case m.Err != nil:
		f.log.Error("attach: find replay start", "conversation", f.id, "err", m.Err)
		sub.transport.Close(core.DisconnectInternalError)
		f.removeAt(i)
		return
	}
	// The client has everything before first. Events that became durable
	// during the lookup (from floor) are at or after first on one node; a
	// relay's durable end can trail the log, so first may lie past it.
	r.next, sub.seen = first, first-1
	if r.next > durable {
		sub.replay = nil
		return
	}
	f.pumpAll(ctx, durable)
}

// unknownEventError is an after_id that is not in the log.
type unknownEventError struct{ id string }

func (e *unknownEventError) Error() string {
	return fmt.Sprintf("event %q is not in this conversation; nothing was replayed", truncate(e.id, 64))
}

// replayStart returns the Seq of the first event r asks for. It reads the
// store's indexes and runs off the mailbox.
func replayStart(store core.Store, id string, r Replay) (uint64, error) {
	bg, cancel := context.WithTimeout(context.Background(), storeReadTimeout)
	defer cancel()
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

// resumed handles resumeReplay, the pacing timer's message.
func (f *fanout) resumed(ctx actor.Context, durable uint64) {
	f.resume = nil
	f.pumpAll(ctx, durable)
}

// pumpAll moves every replaying subscriber along, and schedules another
// round if one had to wait for its socket to drain.
func (f *fanout) pumpAll(ctx actor.Context, durable uint64) {
	waiting := false
	for i := 0; i < len(f.subs); {
		if r := f.subs[i].replay; r == nil || r.resolving {
			i++
			continue
		}
		done, ok := f.pump(ctx, &f.subs[i], durable)
		switch {
		case !ok:
			f.removeAt(i)
			continue
		case !done:
			waiting = true
		}
		i++
	}
	if waiting && f.resume == nil {
		self, root := ctx.Self(), ctx.ActorSystem().Root
		f.resume = time.AfterFunc(replayRetry, func() { root.Send(self, &resumeReplay{}) })
	}
}

// pump sends sub the replayed events it has in buf while its transport has
// room: up to half its queue bound, so live traffic and replay never trip
// the slow-consumer limit together. It keeps one page read ahead (the
// answer, replayRead, pumps again). It reports done false only when the
// socket must drain first, and ok false when the transport refused a
// frame.
func (f *fanout) pump(ctx actor.Context, sub *subscriber, durable uint64) (done, ok bool) {
	bl, paced := sub.transport.(Backlogger)
	r := sub.replay
	for {
		if len(r.buf) == 0 && len(r.ahead) > 0 {
			r.buf, r.ahead = r.ahead, nil
		}
		f.readAhead(ctx, sub, durable)
		if len(r.buf) == 0 {
			if r.next > durable { // nothing can be in flight: reads start at or below durable
				sub.replay = nil // caught up: live from here
			}
			return true, true
		}
		ev := r.buf[0]
		if paced {
			if queued, limit := bl.Backlog(); queued > 0 && queued+len(ev.Raw) > limit/2 {
				return false, true
			}
		}
		if ev.Seq > sub.seen {
			if !sub.transport.Send(ev.Raw) {
				return false, false
			}
			f.m.replayed()
			sub.seen = ev.Seq
		}
		r.buf[0] = nil
		r.buf = r.buf[1:]
		r.next = ev.Seq + 1
	}
}

// readAhead starts the read of the page after what sub holds, unless one
// is under way, one is held already, or the durable log has no more.
func (f *fanout) readAhead(ctx actor.Context, sub *subscriber, durable uint64) {
	r := sub.replay
	if r.reading || len(r.ahead) > 0 {
		return
	}
	from := r.next
	if n := len(r.buf); n > 0 {
		from = r.buf[n-1].Seq + 1
	}
	if from > durable {
		return
	}
	if evs := f.tail.page(from, durable); evs != nil {
		if len(r.buf) == 0 {
			r.buf = evs
		} else {
			r.ahead = evs
		}
		return
	}
	r.reading, r.readFrom = true, from
	self, root, store, id, conn := ctx.Self(), ctx.ActorSystem().Root, f.store, f.id, sub.pid
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), storeReadTimeout)
		evs, err := store.Events(ctx, id, from-1, replayPage)
		cancel()
		root.Send(self, &replayRead{Conn: conn, Next: from, Events: evs, Err: err})
	}()
}

// readDone hands a read page to its subscriber: to send now if it has
// nothing left, else as the page ahead. Events past the durable end are
// dropped: they reach the subscriber by fan-out or by the next read.
func (f *fanout) readDone(ctx actor.Context, m *replayRead, durable uint64) {
	i, ok := f.index[m.Conn.Id]
	if !ok || f.subs[i].replay == nil || !f.subs[i].replay.reading || f.subs[i].replay.readFrom != m.Next {
		return
	}
	sub := &f.subs[i]
	r := sub.replay
	r.reading = false
	if m.Err != nil || len(m.Events) == 0 || m.Events[0].Seq != m.Next {
		f.log.Error("replay: read events", "conversation", f.id, "after", m.Next-1, "got", len(m.Events), "err", m.Err)
		sub.transport.Close(core.DisconnectInternalError)
		f.removeAt(i)
		return
	}
	evs := m.Events
	for len(evs) > 0 && evs[len(evs)-1].Seq > durable {
		evs = evs[:len(evs)-1]
	}
	if len(r.buf) == 0 {
		r.buf = evs
	} else {
		r.ahead = evs
	}
	f.pumpAll(ctx, durable)
}

// deliver hands a durable event's bytes to every live subscriber that has
// not seen it. One whose transport refuses the frame is dropped: its
// transport is closing and its actor will stop. A replaying subscriber will
// read the event from the log.
func (f *fanout) deliver(ev *core.Event) {
	defer f.m.fannedOut(time.Now())
	f.tail.add(ev)
	for i := 0; i < len(f.subs); {
		s := &f.subs[i]
		switch {
		case s.replay != nil || ev.Seq <= s.seen:
		case s.transport.Send(ev.Raw):
			s.seen = ev.Seq
		default:
			f.removeAt(i)
			continue
		}
		i++
	}
}

// sendLive hands a frame that is not in the log (a full_state, a streaming
// delta) to every live subscriber but those skip names.
func (f *fanout) sendLive(frame []byte, skip func(*actor.PID) bool) {
	for i := range f.subs {
		if s := &f.subs[i]; s.replay == nil && (skip == nil || !skip(s.pid)) {
			s.transport.Send(frame)
		}
	}
}

// closeAll closes every subscriber's socket with d. The transport is closed
// directly, so the reason is set before the connection actor stops for any
// other cause, and the connection actor is told to stop.
func (f *fanout) closeAll(ctx actor.Context, d core.Disconnect) {
	for _, s := range f.subs {
		s.transport.Close(d)
		ctx.Send(s.pid, &closeConnection{Reason: d})
	}
	f.subs = nil
	clear(f.index)
}

// remove drops pid, if attached.
func (f *fanout) remove(pid *actor.PID) {
	if i, ok := f.index[pid.Id]; ok {
		f.removeAt(i)
	}
}

// removeAt drops subs[i] by moving the last subscriber into its place.
func (f *fanout) removeAt(i int) {
	delete(f.index, f.subs[i].pid.Id)
	last := len(f.subs) - 1
	if i != last {
		f.subs[i] = f.subs[last]
		f.index[f.subs[i].pid.Id] = i
	}
	f.subs[last] = subscriber{}
	f.subs = f.subs[:last]
}

// stop cancels the pacing timer.
func (f *fanout) stop() {
	if f.resume != nil {
		f.resume.Stop()
	}
}

// waiting reports whether a paced replay waits for a socket to drain.
func (f *fanout) waiting() bool { return f.resume != nil }
