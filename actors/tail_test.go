package actors

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/actors/clusterpb"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/memstore"
)

func tailEvent(seq uint64, size int) *core.Event {
	return &core.Event{ID: fmt.Sprintf("ev-%d", seq), Seq: seq, Raw: []byte(strings.Repeat("x", size))}
}

func seqsOf(evs []*core.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

func TestTail(t *testing.T) {
	seqs := func(from, to uint64) []uint64 {
		var out []uint64
		for s := from; s <= to; s++ {
			out = append(out, s)
		}
		return out
	}
	tests := []struct {
		name  string
		add   []*core.Event
		want  []uint64 // what the tail holds after
		bytes int
		off   bool
	}{
		{"in order", []*core.Event{tailEvent(1, 10), tailEvent(2, 10), tailEvent(3, 10)}, seqs(1, 3), 30, false},
		{"a gap starts afresh", []*core.Event{tailEvent(1, 10), tailEvent(2, 10), tailEvent(5, 7)}, seqs(5, 5), 7, false},
		{"an event too large empties it", []*core.Event{tailEvent(1, 10), tailEvent(2, tailBytes+1)}, nil, 0, false},
		{"and the next starts it again", []*core.Event{tailEvent(1, 10), tailEvent(2, tailBytes+1), tailEvent(3, 4)}, seqs(3, 3), 4, false},
		{"a body counts too", []*core.Event{
			{Seq: 1, Raw: []byte("0123456789"), Body: []byte("01234")},
			{Seq: 2, Raw: []byte("0123456789"), Body: []byte("01234")},
		}, seqs(1, 2), 30, false},
		{"off keeps nothing", []*core.Event{tailEvent(1, 10), tailEvent(2, 10)}, nil, 0, true},
		{"bounded by bytes", []*core.Event{tailEvent(1, tailBytes/2), tailEvent(2, tailBytes/2), tailEvent(3, 1)}, seqs(2, 3), tailBytes/2 + 1, false},
		{"bounded by count", func() []*core.Event {
			var evs []*core.Event
			for s := uint64(1); s <= tailEvents+10; s++ {
				evs = append(evs, tailEvent(s, 1))
			}
			return evs
		}(), seqs(11, tailEvents+10), tailEvents, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := tail{off: tt.off}
			for _, ev := range tt.add {
				tl.add(ev)
			}
			if got := seqsOf(tl.evs); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("holds %v, want %v", got, tt.want)
			}
			if tl.bytes != tt.bytes {
				t.Errorf("bytes %d, want %d", tl.bytes, tt.bytes)
			}
		})
	}
}

func TestTailLookups(t *testing.T) {
	var tl tail
	for s := uint64(10); s <= 20; s++ {
		tl.add(tailEvent(s, 1))
	}
	tl.add(&core.Event{Seq: 21, Raw: []byte("x")}) // a relay's event: no ID
	pages := []struct {
		name          string
		from, through uint64
		want          []uint64
	}{
		{"from inside", 15, 21, []uint64{15, 16, 17, 18, 19, 20, 21}},
		{"up to through only", 15, 17, []uint64{15, 16, 17}},
		{"from the first", 10, 11, []uint64{10, 11}},
		{"from before the tail", 9, 21, nil},
		{"from past the tail", 22, 30, nil},
		{"from past through", 16, 15, nil},
	}
	for _, tt := range pages {
		t.Run("page "+tt.name, func(t *testing.T) {
			got := tl.page(tt.from, tt.through)
			if fmt.Sprint(seqsOf(got)) != fmt.Sprint(tt.want) {
				t.Errorf("page(%d, %d) = %v, want %v", tt.from, tt.through, seqsOf(got), tt.want)
			}
			if len(got) > 0 {
				got[0] = nil // a page is the replay's own: the pump clears what it sent
				if tl.evs[int(tt.from-10)] == nil {
					t.Error("clearing a page cleared the tail")
				}
			}
		})
	}
	ids := []struct {
		id   string
		want uint64 // 0: not found
	}{
		{"ev-10", 10}, {"ev-20", 20}, {"ev-9", 0}, {"", 0},
	}
	for _, tt := range ids {
		t.Run("byID "+tt.id, func(t *testing.T) {
			ev, ok := tl.byID(tt.id)
			switch {
			case tt.want == 0 && ok:
				t.Errorf("byID(%q) found seq %d, want nothing", tt.id, ev.Seq)
			case tt.want != 0 && (!ok || ev.Seq != tt.want):
				t.Errorf("byID(%q) = %v, %v; want seq %d", tt.id, ev, ok, tt.want)
			}
		})
	}
}

// TestResumeFromTheTail: a client that resumes with after_id within the
// tail gets what it missed, in order and once, without a store read; one
// further back, or with an unknown id, is answered from the store as
// before.
func TestResumeFromTheTail(t *testing.T) {
	const logLen = tailEvents + 20
	st := &readLog{Store: memstore.New()}
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	var evs []*core.Event
	for i := range logLen {
		evs = append(evs, post(t, sys, id, fmt.Sprint(i)))
	}
	// Each case posts one live event, so the log grows by one a case;
	// after and from name Seqs in the log as it is when the case starts.
	tests := []struct {
		name      string
		replay    func() Replay
		from      func() uint64 // the first Seq the client must get; past the log for none
		storeRead bool
		unknown   bool
	}{
		{"after the last event", afterSeq(&evs, func() int { return len(evs) }), func() uint64 { return uint64(len(evs)) + 1 }, false, false},
		{"after one in the tail", afterSeq(&evs, func() int { return len(evs) - 4 }), func() uint64 { return uint64(len(evs)) - 3 }, false, false},
		{"after the tail's first", afterSeq(&evs, func() int { return len(evs) - tailEvents + 1 }), func() uint64 { return uint64(len(evs) - tailEvents + 2) }, false, false},
		{"after one before the tail", afterSeq(&evs, func() int { return 3 }), func() uint64 { return 4 }, true, false},
		{"unknown", func() Replay { return Replay{Mode: ReplayAfterID, AfterID: core.NewID()} }, func() uint64 { return uint64(len(evs)) + 1 }, true, true},
		{"all", func() Replay { return Replay{Mode: ReplayAll} }, func() uint64 { return 1 }, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, byID := st.pages(), st.lookups()
			from := tt.from()
			tr := connect(t, sys, id, tt.replay())
			head := 1 // full_state
			if tt.unknown {
				head++ // the ServerErrorEvent
			}
			replayed := len(evs) + 1 - int(from)
			tr.waitFrames(t, head+replayed)
			live := post(t, sys, id, "live "+tt.name)
			evs = append(evs, live)
			frames := tr.waitFrames(t, head+replayed+1)
			got := frames[head:]
			if len(got) != replayed+1 {
				t.Fatalf("got %d events, want %d replayed and the live one", len(got), replayed)
			}
			for i, f := range got {
				if want := evs[int(from)-1+i]; f["id"] != want.ID {
					t.Fatalf("event %d: id %v, want seq %d (%s): lost, duplicated or out of order", i, f["id"], want.Seq, want.ID)
				}
			}
			reads := st.pages() - events + st.lookups() - byID
			if tt.storeRead != (reads > 0) {
				t.Errorf("%d store reads, want a read: %v", reads, tt.storeRead)
			}
		})
	}
}

// afterSeq is a replay after the event with the Seq seq returns, in *evs.
func afterSeq(evs *[]*core.Event, seq func() int) func() Replay {
	return func() Replay { return Replay{Mode: ReplayAfterID, AfterID: (*evs)[seq()-1].ID} }
}

// TestRelayResumesFromItsTail: a relay answers a resume from the events
// it delivered, pushed by the owner or read to fill a gap, exactly as the
// store would; an after_id it holds without an ID (pushed by an older
// node) is looked up, and the rest still comes from memory.
func TestRelayResumesFromItsTail(t *testing.T) {
	st := &readLog{Store: memstore.New()}
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	var evs []*core.Event
	for i := range 30 {
		evs = append(evs, post(t, sys, id, fmt.Sprint(i)))
	}
	owners := newFakeOwners(t)
	owner, _ := inbox(t, sys)
	relay := startRelay(t, sys, id, owners)
	owners.waitAsked(t)
	owners.subscribed <- &clusterpb.Subscribed{Durable: 0, State: stateOf(t, st, id), Owner: refOf(owner)}
	first := relaySocket(t, sys, relay, id)
	first.waitFrames(t, 1)
	sys.root.Send(relay, eventsOf(evs[19])) // 1..19 fill the gap from the store, 20 is pushed
	sys.root.Send(relay, eventsOf(evs[20:25]...))
	sys.root.Send(relay, eventsOfOlderNode(evs[25:]...))
	wantIDs(t, first, evs)

	tests := []struct {
		name   string
		after  int // the Seq of the after_id
		byID   bool
		events bool
	}{
		{"after one read into a gap", 10, false, false},
		{"after one pushed", 22, false, false},
		{"after one pushed without its ID", 27, true, false},
		{"after the last", 30, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			byID, events := st.lookups(), st.pages()
			tr := relayAttach(t, sys, relay, id, Replay{Mode: ReplayAfterID, AfterID: evs[tt.after-1].ID})
			wantIDs(t, tr, evs[tt.after:])
			if tt.byID {
				// With nothing to replay, the socket may have all it gets
				// before the lookup has run.
				for deadline := time.Now().Add(30 * time.Second); st.lookups() == byID; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("the ID was not looked up in the store, want it looked up")
					}
				}
			} else if st.lookups() > byID {
				t.Error("looked the ID up in the store, want it found in the tail")
			}
			if got := st.pages() > events; got != tt.events {
				t.Errorf("read a page from the store: %v, want %v", got, tt.events)
			}
		})
	}
}

func relayAttach(t *testing.T, sys *System, relay *actor.PID, id string, r Replay) *fakeTransport {
	t.Helper()
	conn, _ := inbox(t, sys)
	tr := newFakeTransport()
	sys.root.Send(relay, &attachConnection{ConversationID: id, Conn: conn, Transport: tr, Replay: r})
	return tr
}

// TestResumeAfterAFailedWrite: the Seqs of a failed append are used
// again by the next events; a resume from the tail gets the stored ones.
func TestResumeAfterAFailedWrite(t *testing.T) {
	g := &gatedStore{Store: memstore.New(), gate: make(chan struct{})}
	close(g.gate)
	st := &readLog{Store: g}
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	var evs []*core.Event
	for i := range 5 {
		evs = append(evs, post(t, sys, id, fmt.Sprint(i)))
	}
	boom := errors.New("disk on fire")
	g.fail.Store(&boom)
	if _, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("lost")); err == nil {
		t.Fatal("the post succeeded, want the store's failure")
	}
	g.fail.Store(nil)
	evs = append(evs, post(t, sys, id, "six"), post(t, sys, id, "seven"))
	if evs[5].Seq != 6 {
		t.Fatalf("the post after the failure got seq %d, want 6 again", evs[5].Seq)
	}
	reads := st.readCount()
	tr := connect(t, sys, id, Replay{Mode: ReplayAfterID, AfterID: evs[2].ID})
	wantIDs(t, tr, evs[3:])
	if st.readCount() != reads {
		t.Errorf("the resume read the store %d times, want none", st.readCount()-reads)
	}
}

// TestResumeAroundAnEventLargerThanTheTail: an event too large for the
// tail empties it; resumes before and after it read the store, those
// after the next events do not, and each gets exactly what it missed.
func TestResumeAroundAnEventLargerThanTheTail(t *testing.T) {
	st := &readLog{Store: memstore.New()}
	sys := startSystem(t, st, 0)
	id := createConv(t, sys)
	var evs []*core.Event
	for i := range 3 {
		evs = append(evs, post(t, sys, id, fmt.Sprint(i)))
	}
	evs = append(evs, post(t, sys, id, strings.Repeat("x", tailBytes)))
	for i := range 3 {
		evs = append(evs, post(t, sys, id, fmt.Sprint("after ", i)))
	}
	tests := []struct {
		name  string
		after int // the Seq of the after_id
		reads bool
	}{
		{"after one before it", 2, true},
		{"after it", 4, true},
		{"after one past it", 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reads := st.readCount()
			tr := connect(t, sys, id, Replay{Mode: ReplayAfterID, AfterID: evs[tt.after-1].ID})
			wantIDs(t, tr, evs[tt.after:])
			if got := st.readCount() > reads; got != tt.reads {
				t.Errorf("read the store: %v, want %v", got, tt.reads)
			}
		})
	}
}
