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
// server with many conversations holds at most tailBytes of payloads for
// each, and only for events it delivered since the actor started.
const (
	tailEvents = 64
	tailBytes  = 64 << 10
)

// tail is the last events delivered, contiguous by Seq, oldest first.
type tail struct {
	evs   []*core.Event
	bytes int
}

// add appends ev, the next event delivered. An event that does not follow
// the last one (a relay that skipped a range) starts the tail afresh, and
// one larger than the whole bound empties it.
func (t *tail) add(ev *core.Event) {
	if n := len(t.evs); n > 0 && t.evs[n-1].Seq+1 != ev.Seq {
		t.reset()
	}
	if len(ev.Raw) > tailBytes {
		t.reset()
		return
	}
	t.evs = append(t.evs, ev)
	t.bytes += len(ev.Raw)
	for len(t.evs) > tailEvents || t.bytes > tailBytes {
		t.bytes -= len(t.evs[0].Raw)
		t.evs[0] = nil
		t.evs = t.evs[1:]
	}
}

func (t *tail) reset() {
	clear(t.evs)
	t.evs, t.bytes = t.evs[:0], 0
}

// byID returns the event with id, if the tail holds it. An empty id never
// matches (a relay's events carry none).
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
