package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/memstore"
)

// Seal writes parent_id in the envelope, before kind, so that the body
// stays what was given and ParentOf reads it back.
func TestSealWritesParentID(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		name, parent, want string
	}{
		{"with a parent", "p-1", `{"id":"e","timestamp":"2026-01-02T03:04:05.000000Z","source":"user","parent_id":"p-1","kind":"MessageEvent","a":1}`},
		{"a new root", core.RootParentID, `{"id":"e","timestamp":"2026-01-02T03:04:05.000000Z","source":"user","parent_id":"__root__","kind":"MessageEvent","a":1}`},
		{"none", "", `{"id":"e","timestamp":"2026-01-02T03:04:05.000000Z","source":"user","kind":"MessageEvent","a":1}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := &core.Event{ID: "e", Timestamp: ts, Source: core.SourceUser, Kind: core.KindMessage, ParentID: tt.parent, Body: []byte(`{"a":1}`)}
			if err := e.Seal(); err != nil {
				t.Fatal(err)
			}
			if string(e.Raw) != tt.want {
				t.Errorf("raw = %s, want %s", e.Raw, tt.want)
			}
			if got := core.BodyFromRaw(e.Raw); string(got) != `{"a":1}` {
				t.Errorf("body = %s, want {\"a\":1}", got)
			}
			if got, ok := core.ParentOf(e.Raw); got != tt.parent || ok != (tt.parent != "") {
				t.Errorf("ParentOf = %q, %v; want %q", got, ok, tt.parent)
			}
		})
	}
}

func TestParentOf(t *testing.T) {
	for _, tt := range []struct {
		name, raw string
		want      string
		ok        bool
	}{
		{"envelope", `{"id":"e","timestamp":"t","source":"agent","parent_id":"p","kind":"K","x":"parent_id"}`, "p", true},
		{"escaped", `{"id":"e","timestamp":"t","source":"agent","parent_id":"p\u0041","kind":"K"}`, "pA", true},
		{"in an older event's body", `{"id":"e","timestamp":"t","source":"agent","kind":"K","parent_id":"p","y":1}`, "p", true},
		{"null in the body", `{"id":"e","timestamp":"t","source":"agent","kind":"K","parent_id":null}`, "", false},
		{"a text mentioning it", `{"id":"e","timestamp":"t","source":"agent","kind":"K","text":"\"parent_id\""}`, "", false},
		{"none", `{"id":"e","timestamp":"t","source":"agent","kind":"K"}`, "", false},
	} {
		if got, ok := core.ParentOf([]byte(tt.raw)); got != tt.want || ok != tt.ok {
			t.Errorf("%s: ParentOf = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestHeadParentForAndAfter(t *testing.T) {
	for _, tt := range []struct {
		name    string
		head    core.Head
		lastSeq uint64
		want    string
	}{
		{"an empty log", core.Head{}, 0, ""},
		{"a HEAD", core.Head{LeafEventID: "a"}, 3, "a"},
		{"navigated to null", core.Head{Empty: true}, 3, core.RootParentID},
		{"only state updates so far", core.Head{}, 2, core.RootParentID},
	} {
		if got := tt.head.ParentFor(tt.lastSeq); got != tt.want {
			t.Errorf("%s: ParentFor = %q, want %q", tt.name, got, tt.want)
		}
	}
	h := core.Head{Empty: true, Seq: 4}
	if got := h.After("u", 5, core.KindStateUpdate); got != (core.Head{Empty: true, Seq: 5}) {
		t.Errorf("after a state update: %+v, want the HEAD unmoved at seq 5", got)
	}
	if got := h.After("m", 5, core.KindMessage); got != (core.Head{LeafEventID: "m", Seq: 5}) {
		t.Errorf("after a message: %+v, want it as the HEAD", got)
	}
}

// logBuilder appends events to a conversation of a memstore, each with the
// parent given ("-" for none).
type logBuilder struct {
	t   *testing.T
	st  *memstore.Store
	id  string
	ids map[string]string // name -> event ID
	seq map[string]uint64
	n   uint64
}

func newLog(t *testing.T) *logBuilder {
	st := memstore.New()
	id := core.NewID()
	if _, _, err := st.CreateConversation(context.Background(), &core.Conversation{ID: id}); err != nil {
		t.Fatal(err)
	}
	return &logBuilder{t: t, st: st, id: id, ids: map[string]string{}, seq: map[string]uint64{}}
}

// chain appends n messages named prefix0, prefix1, ..., each the child of
// the one before, the first of parent.
func (l *logBuilder) chain(prefix string, n int, parent string) *logBuilder {
	l.t.Helper()
	for i := range n {
		name := fmt.Sprint(prefix, i)
		l.add(name, msg, parent)
		parent = name
	}
	return l
}

// add appends event name of kind with parent: another event's name, "-"
// for none, or core.RootParentID.
func (l *logBuilder) add(name, kind, parent string) *logBuilder {
	l.t.Helper()
	l.n++
	p := parent
	switch parent {
	case "-":
		p = ""
	case core.RootParentID:
	default:
		if id, ok := l.ids[parent]; ok {
			p = id
		}
	}
	id, named := l.ids[name] // named ahead, for an earlier event's parent_id
	if !named {
		id = core.NewEventID()
	}
	e := &core.Event{ID: id, Seq: l.n, Timestamp: time.Unix(int64(l.n), 0).UTC(), Source: core.SourceAgent, Kind: kind, ParentID: p}
	if err := e.Seal(); err != nil {
		l.t.Fatal(err)
	}
	if err := l.st.AppendEvents(context.Background(), l.id, []*core.Event{e}); err != nil {
		l.t.Fatal(err)
	}
	l.ids[name], l.seq[name] = e.ID, l.n
	return l
}

func (l *logBuilder) event(name string) *core.Event {
	l.t.Helper()
	e, err := l.st.EventByID(context.Background(), l.id, l.ids[name])
	if err != nil {
		l.t.Fatal(err)
	}
	return e
}

const (
	msg   = core.KindMessage
	state = core.KindStateUpdate
	cerr  = core.KindConversationError
)

// ResolveHead finds the HEAD after the log's last event from the events
// after the recorded one, as the stamps say.
func TestResolveHead(t *testing.T) {
	for _, tt := range []struct {
		name     string
		build    func(l *logBuilder)
		recorded func(l *logBuilder) core.Head
		leaf     string // the name of the HEAD's event, "" for none
		empty    bool
	}{
		{"a tree node last", func(l *logBuilder) {
			l.add("m1", msg, "-").add("u2", state, "m1").add("m3", msg, "m1")
		}, nil, "m3", false},
		{"a state update last carries the HEAD", func(l *logBuilder) {
			l.add("m1", msg, "-").add("m2", msg, "m1").add("u3", state, "m2").add("u4", state, "m2")
		}, nil, "m2", false},
		{"a state update after navigate to null", func(l *logBuilder) {
			l.add("m1", msg, "-").add("u2", state, core.RootParentID)
		}, nil, "", true},
		{"the recorded HEAD when nothing came after it", func(l *logBuilder) {
			l.add("m1", msg, "-").add("m2", msg, "m1")
		}, func(l *logBuilder) core.Head { return core.Head{LeafEventID: l.ids["m1"], Seq: 2} }, "m1", false},
		{"a navigate, then a state update", func(l *logBuilder) {
			l.add("m1", msg, "-").add("m2", msg, "m1").add("u3", state, "m1")
		}, func(l *logBuilder) core.Head { return core.Head{LeafEventID: l.ids["m1"], Seq: 2} }, "m1", false},
		{"navigate to null, then only an unstamped state update", func(l *logBuilder) {
			l.add("m1", msg, "-").add("u2", state, "-")
		}, func(l *logBuilder) core.Head { return core.Head{Empty: true, Seq: 1} }, "", true},
		{"an older log without stamps", func(l *logBuilder) {
			l.add("m1", msg, "-").add("m2", msg, "-").add("u3", state, "-").add("e4", cerr, "-")
		}, nil, "m2", false},
		{"a stamped error report is a tree node", func(l *logBuilder) {
			l.add("m1", msg, "-").add("e2", cerr, "m1")
		}, nil, "e2", false},
		{"only state updates", func(l *logBuilder) {
			l.add("u1", state, "-").add("u2", state, core.RootParentID)
		}, nil, "", true},
		{"one unstamped state update", func(l *logBuilder) { l.add("u1", state, "-") }, nil, "", false},
		{"a recorded HEAD past the log's end", func(l *logBuilder) {
			l.add("m1", msg, "-").add("m2", msg, "m1")
		}, func(l *logBuilder) core.Head { return core.Head{LeafEventID: "lost", Seq: 9} }, "m2", false},
		{"pages of state updates without stamps", func(l *logBuilder) {
			l.add("m1", msg, "-")
			for i := range 600 {
				l.add(fmt.Sprint("u", i), state, "-")
			}
		}, nil, "m1", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := newLog(t)
			tt.build(l)
			var rec core.Head
			if tt.recorded != nil {
				rec = tt.recorded(l)
			}
			got, err := core.ResolveHead(context.Background(), l.st, l.id, rec, l.n)
			if err != nil {
				t.Fatal(err)
			}
			want := core.Head{LeafEventID: l.ids[tt.leaf], Empty: tt.empty, Seq: l.n}
			if tt.leaf == "" {
				want.LeafEventID = ""
			}
			if got != want {
				t.Errorf("ResolveHead = %+v, want %+v (%s)", got, want, tt.leaf)
			}
		})
	}
}

// Branch is upstream's path_to_root: the parent_id links, and the event
// before for one without parent_id.
func TestBranch(t *testing.T) {
	l := newLog(t)
	l.add("a", msg, "-").add("b", msg, "a").add("u", state, "b").add("c", msg, "b").
		add("d", msg, "a").add("e", msg, "d").               // after navigate to a
		add("f", msg, core.RootParentID).add("g", msg, "f"). // after navigate to null
		add("h", msg, "-").add("i", msg, "-").               // without stamps: each the previous one's child
		add("x", msg, "nowhere")
	for _, tt := range []struct {
		leaf string
		want []string
	}{
		{"a", []string{"a"}},
		{"c", []string{"a", "b", "c"}},
		{"u", []string{"a", "b", "u"}},
		{"e", []string{"a", "d", "e"}},
		{"g", []string{"f", "g"}},
		{"i", []string{"f", "g", "h", "i"}},
		{"x", []string{"x"}},
	} {
		got, err := core.Branch(context.Background(), l.st, l.id, l.event(tt.leaf), 0)
		if err != nil {
			t.Fatal(err)
		}
		var want []uint64
		for _, n := range tt.want {
			want = append(want, l.seq[n])
		}
		if !slices.Equal(got, want) {
			t.Errorf("Branch(%s) = %v, want %v %v", tt.leaf, got, tt.want, want)
		}
	}
	if _, err := core.Branch(context.Background(), l.st, l.id, l.event("e"), 2); !errors.Is(err, core.ErrBranchTooLong) {
		t.Errorf("a branch of 3 with a limit of 2: %v, want ErrBranchTooLong", err)
	}
	if got, err := core.Branch(context.Background(), l.st, l.id, l.event("e"), 3); err != nil || len(got) != 3 {
		t.Errorf("a branch of 3 with a limit of 3: %v, %v", got, err)
	}
}

// readCounter is a Store that counts the events Events returns.
type readCounter struct {
	core.Store
	read int
}

func (r *readCounter) Events(ctx context.Context, id string, after uint64, limit int) ([]*core.Event, error) {
	evs, err := r.Store.Events(ctx, id, after, limit)
	r.read += len(evs)
	return evs, err
}

// With a limit, Branch reads at most BranchReach times as many events as
// the limit, however short the branch: a short branch whose root lies
// far back, behind another branch's events, is ErrBranchTooLong, and the
// log before the reach is never read.
func TestBranchReadsWithinItsReach(t *testing.T) {
	const other = 100 // events of another branch between the root and the leaf
	l := newLog(t)
	l.add("a", msg, "-").chain("x", other, "a")
	l.add("b", msg, "a").add("c", msg, "b") // after navigate to a
	for _, tt := range []struct {
		name    string
		max     int
		want    []string // nil: ErrBranchTooLong
		maxRead int
	}{
		{"no limit reads back to the root", 0, []string{"a", "b", "c"}, other + 2},
		{"a reach past the root", (other + 2) / core.BranchReach, []string{"a", "b", "c"}, other + 2},
		{"a reach short of the root", 5, nil, 5 * core.BranchReach},
		{"a reach one short of the root", (other + 1) / core.BranchReach, nil, (other + 1) / core.BranchReach * core.BranchReach},
		{"a branch longer than the limit", 2, nil, 2 * core.BranchReach},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &readCounter{Store: l.st}
			got, err := core.Branch(context.Background(), st, l.id, l.event("c"), tt.max)
			switch {
			case tt.want == nil && !errors.Is(err, core.ErrBranchTooLong):
				t.Errorf("Branch = %v, %v; want ErrBranchTooLong", got, err)
			case tt.want != nil && err != nil:
				t.Errorf("Branch: %v, want %v", err, tt.want)
			case tt.want != nil:
				var want []uint64
				for _, n := range tt.want {
					want = append(want, l.seq[n])
				}
				if !slices.Equal(got, want) {
					t.Errorf("Branch = %v, want %v", got, want)
				}
			}
			if st.read > tt.maxRead {
				t.Errorf("Branch read %d events, want at most %d", st.read, tt.maxRead)
			}
		})
	}
}

// A parent_id that names no earlier event ends the branch there, as a
// root, in a log longer than Branch's reach as in a short one: the walk
// runs out of reach without finding the parent, and a look-up by ID tells
// a parent that is not in the log from one too far back. Before, a long
// log made the first ErrBranchTooLong, which a fork answers 400 "too
// large" for a branch of two.
func TestBranchWithAParentNotInTheLog(t *testing.T) {
	const other = 20 // events before the branch, past a reach of 2*3
	l := newLog(t)
	l.add("a", msg, "-").chain("o", other, "a")
	l.ids["v"] = core.NewEventID() // so that w can name it: a later event
	l.add("x", msg, "nowhere").add("y", msg, "x").
		add("w", msg, "v").add("v", msg, "w").
		add("far", msg, "a") // a parent that is there, past the reach
	for _, tt := range []struct {
		leaf string
		max  int
		want []string // nil: ErrBranchTooLong
	}{
		{"y", 0, []string{"x", "y"}},
		{"y", 3, []string{"x", "y"}},
		{"x", 1, []string{"x"}},
		{"v", 3, []string{"w", "v"}},
		{"far", 0, []string{"a", "far"}},
		{"far", 3, nil},
	} {
		t.Run(fmt.Sprintf("%s with a limit of %d", tt.leaf, tt.max), func(t *testing.T) {
			got, err := core.Branch(context.Background(), l.st, l.id, l.event(tt.leaf), tt.max)
			if tt.want == nil {
				if !errors.Is(err, core.ErrBranchTooLong) {
					t.Errorf("Branch = %v, %v; want ErrBranchTooLong", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Branch: %v, want %v", err, tt.want)
			}
			var want []uint64
			for _, n := range tt.want {
				want = append(want, l.seq[n])
			}
			if !slices.Equal(got, want) {
				t.Errorf("Branch = %v, want %v %v", got, tt.want, want)
			}
		})
	}
}

// A runtime's parent_id goes to the envelope, not the body.
func TestParsePublishedParentID(t *testing.T) {
	for _, tt := range []struct {
		name, event, parent string
		bad                 bool
	}{
		{"given", `{"kind":"PauseEvent","parent_id":"p"}`, "p", false},
		{"null", `{"kind":"PauseEvent","parent_id":null}`, "", false},
		{"absent", `{"kind":"PauseEvent"}`, "", false},
		{"empty", `{"kind":"PauseEvent","parent_id":""}`, "", true},
		{"not a string", `{"kind":"PauseEvent","parent_id":3}`, "", true},
	} {
		p, err := core.ParsePublished([]byte(tt.event))
		if (err != nil) != tt.bad {
			t.Errorf("%s: err = %v, want an error: %v", tt.name, err, tt.bad)
			continue
		}
		if err == nil && (p.ParentID != tt.parent || bytes.Contains(p.Body, []byte("parent_id"))) {
			t.Errorf("%s: parent %q, body %s; want %q in the envelope only", tt.name, p.ParentID, p.Body, tt.parent)
		}
	}
}
