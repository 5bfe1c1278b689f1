package actors

import "github.com/agent-server/agent-server/core"

// The end of the log a fanout delivered is kept in memory, so that a
// client that resumes with after_id (a dropped socket, a restarted
// load balancer, a reconnect storm) is answered without reading the
// store: the lookup of its after_id and the events it missed are both
// here when it was away for less than the tail holds. Each resume that
// misses it costs two store reads, each on a goroutine of its own with a
// reply through the mailbox.
//
// The bounds are per conversation (or per relay, in cluster mode): a
// server with many conversations holds at most tailBytes of events for
// each (their wire form and their body, counted apart), and only for
// events it delivered since the actor started. An event kept here is
// shared with whoever else holds it (System.PostEvent returns it), and,
// as everywhere once sealed, never changed.
const (
	tailEvents = 32
	tailBytes  = 32 << 10
)

// tail is the last events delivered, contiguous by Seq, oldest first.
type tail struct {
	evs   []*core.Event
	bytes int
	// off keeps nothing: a cluster owner's fanout, whose followers are
	// runtimes and relays, not clients that resume. The relays keep
	// their tails on the clients' nodes.
	off bool
}

// add appends ev, the next event delivered. An event that does not follow
// the last one (a relay that skipped a range) starts the tail afresh, and
// one larger than the whole bound empties it.
func (t *tail) add(ev *core.Event) {
	if t.off {
		return
	}
	if n := len(t.evs); n > 0 && t.evs[n-1].Seq+1 != ev.Seq {
		t.reset()
	}
	n := eventBytes(ev)
	if n > tailBytes {
		t.reset()
		return
	}
	t.evs = append(t.evs, ev)
	t.bytes += n
	for len(t.evs) > tailEvents || t.bytes > tailBytes {
		t.bytes -= eventBytes(t.evs[0])
		t.evs[0] = nil
		t.evs = t.evs[1:]
	}
}

// eventBytes is what keeping ev holds: its wire form and its body.
func eventBytes(ev *core.Event) int { return len(ev.Raw) + len(ev.Body) }

// reset empties the tail.
func (t *tail) reset() {
	clear(t.evs)
	t.evs, t.bytes = t.evs[:0], 0
}

// byID returns the event with id, if the tail holds it. An empty id never
// matches (an older node's relay events carry none).
func (t *tail) byID(id string) (*core.Event, bool) {
	if id == "" {
		return nil, false
	}
	for i := len(t.evs) - 1; i >= 0; i-- {
		if t.evs[i].ID == id {
			return t.evs[i], true
		}
	}
	return nil, false
}

// page returns a copy of the events from Seq from through through, at most
// replayPage of them, or nil when the tail does not hold from.
func (t *tail) page(from, through uint64) []*core.Event {
	if len(t.evs) == 0 || from < t.evs[0].Seq || from > through {
		return nil
	}
	i := int(from - t.evs[0].Seq)
	if i >= len(t.evs) {
		return nil
	}
	j := i
	for j < len(t.evs) && j-i < replayPage && t.evs[j].Seq <= through {
		j++
	}
	return append([]*core.Event(nil), t.evs[i:j]...)
}
