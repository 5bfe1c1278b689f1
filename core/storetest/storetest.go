// Package storetest is the contract every core.Store must meet, as tests
// that each store's own test file runs against a fresh instance.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
)

// Run runs the contract against stores made by open, one per subtest.
func Run(t *testing.T, open func(t *testing.T) core.Store) {
	t.Run("log", func(t *testing.T) { testLog(t, open(t)) })
	t.Run("batch", func(t *testing.T) { testBatch(t, open(t)) })
	t.Run("concurrent batches", func(t *testing.T) { testConcurrent(t, open(t)) })
	t.Run("refusals", func(t *testing.T) { testRefusals(t, open(t)) })
	t.Run("update", func(t *testing.T) { testUpdate(t, open(t)) })
	t.Run("search", func(t *testing.T) { testSearch(t, open(t)) })
	t.Run("idempotency keys", func(t *testing.T) { testKeys(t, open(t)) })
	t.Run("fork", func(t *testing.T) { testFork(t, open(t)) })
}

// Sealed returns a sealed user message with the given Seq and timestamp.
func Sealed(t testing.TB, seq uint64, ts time.Time, body string) *core.Event {
	t.Helper()
	e := &core.Event{ID: core.NewID(), Seq: seq, Timestamp: ts, Source: core.SourceUser, Kind: core.KindMessage, Body: []byte(body)}
	if err := e.Seal(); err != nil {
		t.Fatal(err)
	}
	return e
}

// NewConversation creates a conversation in s and returns its ID.
func NewConversation(t testing.TB, s core.Store) string {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Microsecond)
	c := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle, Title: "t", CreatedAt: now, UpdatedAt: now}
	if _, created, err := s.CreateConversation(context.Background(), c); err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	return c.ID
}

func testLog(t *testing.T, s core.Store) {
	ctx := context.Background()
	id := NewConversation(t, s)
	if _, created, _ := s.CreateConversation(ctx, &core.Conversation{ID: id}); created {
		t.Fatal("second create reported created")
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []*core.Event
	for i := 1; i <= 5; i++ {
		body := `{"n":1}`
		if i == 2 {
			body = `{}`
		}
		evs = append(evs, Sealed(t, uint64(i), t0.Add(time.Duration(i)*time.Second), body))
	}
	if err := s.AppendEvents(ctx, id, evs[:3]); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEvents(ctx, id, evs[4:]); !errors.Is(err, core.ErrSeqConflict) {
		t.Fatalf("append with a gap in seq: %v, want ErrSeqConflict", err)
	}
	if err := s.AppendEvents(ctx, id, evs[3:]); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Conversation(ctx, id); err != nil || !c.UpdatedAt.Equal(evs[4].Timestamp) {
		t.Errorf("updated_at = %v (%v), want the last event's %s", c, err, evs[4].Timestamp)
	}

	tests := []struct {
		name     string
		after    uint64
		limit    int
		wantSeqs []uint64
	}{
		{"all", 0, 0, []uint64{1, 2, 3, 4, 5}},
		{"after 2", 2, 0, []uint64{3, 4, 5}},
		{"limit", 1, 2, []uint64{2, 3}},
		{"past the end", 5, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Events(ctx, id, tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.wantSeqs) {
				t.Fatalf("got %d events, want %d", len(got), len(tt.wantSeqs))
			}
			for i, e := range got {
				want := evs[tt.wantSeqs[i]-1]
				if e.Seq != want.Seq || e.ID != want.ID || string(e.Raw) != string(want.Raw) || !e.Timestamp.Equal(want.Timestamp) ||
					e.Kind != want.Kind || e.Source != want.Source {
					t.Errorf("event %d = %+v, want %+v", i, e, want)
				}
				body := e.Body
				if body == nil {
					body = core.BodyFromRaw(e.Raw)
				}
				if re := (&core.Event{ID: e.ID, Timestamp: e.Timestamp, Source: e.Source, Kind: e.Kind, Body: body}); re.Seal() != nil || string(re.Raw) != string(want.Raw) {
					t.Errorf("event %d: body %s does not reseal to the stored raw %s", i, body, want.Raw)
				}
			}
		})
	}

	for _, tc := range []struct {
		at   time.Time
		want uint64
	}{{time.Time{}, 1}, {t0, 1}, {t0.Add(3 * time.Second), 3}, {t0.Add(3500 * time.Millisecond), 4}, {t0.Add(time.Hour), 6}} {
		if got, err := s.FirstSeqAtOrAfter(ctx, id, tc.at); got != tc.want || err != nil {
			t.Errorf("FirstSeqAtOrAfter(%s) = %d, %v, want %d", tc.at, got, err, tc.want)
		}
	}
	if got, _ := s.LastSeq(ctx, id); got != 5 {
		t.Errorf("LastSeq = %d", got)
	}
	if e, err := s.EventByID(ctx, id, evs[2].ID); err != nil || e.Seq != 3 {
		t.Errorf("EventByID = %v, %v", e, err)
	}
	if _, err := s.EventByID(ctx, id, core.NewID()); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("EventByID(unknown) = %v, want ErrNotFound", err)
	}
	other := NewConversation(t, s)
	if got, _ := s.LastSeq(ctx, other); got != 0 {
		t.Errorf("LastSeq of an empty log = %d", got)
	}
	if got, _ := s.FirstSeqAtOrAfter(ctx, other, t0); got != 1 {
		t.Errorf("FirstSeqAtOrAfter on an empty log = %d, want 1", got)
	}
	if _, err := s.EventByID(ctx, other, evs[2].ID); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("EventByID of another conversation's event = %v, want ErrNotFound", err)
	}
	if err := s.DeleteConversation(ctx, id); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"conversation": func() error { _, err := s.Conversation(ctx, id); return err }(),
		"events":       func() error { _, err := s.Events(ctx, id, 0, 0); return err }(),
		"event by id":  func() error { _, err := s.EventByID(ctx, id, evs[0].ID); return err }(),
		"append":       s.AppendEvents(ctx, id, []*core.Event{Sealed(t, 6, t0, `{}`)}),
		"delete again": s.DeleteConversation(ctx, id),
	} {
		if !errors.Is(err, core.ErrNotFound) {
			t.Errorf("%s after delete: %v, want ErrNotFound", name, err)
		}
	}
	// The ID may be created again, with an empty log.
	if _, created, err := s.CreateConversation(ctx, &core.Conversation{ID: id}); err != nil || !created {
		t.Fatalf("recreate: %v %v", created, err)
	}
	if got, _ := s.LastSeq(ctx, id); got != 0 {
		t.Errorf("LastSeq after delete and recreate = %d, want 0", got)
	}
	if _, err := s.EventByID(ctx, id, evs[0].ID); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("EventByID of a deleted event after recreate = %v, want ErrNotFound", err)
	}
}

func testBatch(t *testing.T, s core.Store) {
	ctx := context.Background()
	a, b := NewConversation(t, s), NewConversation(t, s)
	t0 := time.Now().UTC()
	errs := s.AppendBatch(ctx, []core.Append{
		{ConversationID: a, Events: []*core.Event{Sealed(t, 1, t0, `{}`), Sealed(t, 2, t0, `{}`)}},
		{ConversationID: core.NewID(), Events: []*core.Event{Sealed(t, 1, t0, `{}`)}},
		{ConversationID: b, Events: []*core.Event{Sealed(t, 2, t0, `{}`)}}, // a gap
		{ConversationID: b, Events: []*core.Event{Sealed(t, 1, t0, `{}`)}},
		{ConversationID: a, Events: []*core.Event{Sealed(t, 3, t0, `{}`)}},
	})
	if len(errs) != 5 || errs[0] != nil || !errors.Is(errs[1], core.ErrNotFound) || !errors.Is(errs[2], core.ErrSeqConflict) || errs[3] != nil || errs[4] != nil {
		t.Fatalf("errs = %v, want [nil ErrNotFound gap nil nil]", errs)
	}
	if got, _ := s.LastSeq(ctx, a); got != 3 {
		t.Errorf("LastSeq(a) = %d, want 3", got)
	}
	if got, _ := s.LastSeq(ctx, b); got != 1 {
		t.Errorf("LastSeq(b) = %d, want 1", got)
	}
}

// Concurrent batches, each to its own conversations, all land.
func testConcurrent(t *testing.T, s core.Store) {
	ctx := context.Background()
	const writers, rounds = 8, 20
	ids := make([]string, writers)
	for i := range ids {
		ids[i] = NewConversation(t, s)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				err := s.AppendBatch(ctx, []core.Append{{ConversationID: ids[w], Events: []*core.Event{Sealed(t, uint64(r+1), time.Now().UTC(), `{}`)}}})[0]
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if got, _ := s.LastSeq(ctx, id); got != rounds {
			t.Errorf("LastSeq = %d, want %d", got, rounds)
		}
	}
}

// An element carrying an event ID stored already, or a stale epoch, is
// refused with its own error and does not stop the others.
func testRefusals(t *testing.T, s core.Store) {
	ctx := context.Background()
	a, b := NewConversation(t, s), NewConversation(t, s)
	t0 := time.Now().UTC()
	first := Sealed(t, 1, t0, `{}`)
	if err := s.AppendEvents(ctx, a, []*core.Event{first}); err != nil {
		t.Fatal(err)
	}
	twin := Sealed(t, 2, t0, `{}`)
	twin.ID = first.ID
	inner := Sealed(t, 2, t0, `{}`)
	innerTwin := Sealed(t, 3, t0, `{}`)
	innerTwin.ID = inner.ID
	errs := s.AppendBatch(ctx, []core.Append{
		{ConversationID: a, Events: []*core.Event{twin}},                   // an ID stored already
		{ConversationID: b, Events: []*core.Event{Sealed(t, 1, t0, `{}`)}}, // fine
		{ConversationID: a, Events: []*core.Event{inner, innerTwin}},       // one ID twice
		{ConversationID: b, Events: []*core.Event{Sealed(t, 2, t0, `{}`)}, Epoch: 7},
		{ConversationID: a, Events: []*core.Event{Sealed(t, 2, t0, `{}`)}}, // fine
	})
	want := []error{core.ErrDuplicateEventID, nil, core.ErrDuplicateEventID, core.ErrFenced, nil}
	for i := range want {
		if (want[i] == nil) != (errs[i] == nil) || (want[i] != nil && !errors.Is(errs[i], want[i])) {
			t.Errorf("element %d: err = %v, want %v", i, errs[i], want[i])
		}
	}
	for id, want := range map[string]uint64{a: 2, b: 1} {
		if got, _ := s.LastSeq(ctx, id); got != want {
			t.Errorf("LastSeq(%s) = %d, want %d", id, got, want)
		}
	}
	if e, err := s.EventByID(ctx, a, first.ID); err != nil || e.Seq != 1 {
		t.Errorf("the first event's ID now names %v (%v), want seq 1", e, err)
	}
}

// UpdateConversation replaces the metadata with epoch 0 (a single node's,
// a tool's) whatever the conversation's epoch, and with another epoch
// only if it is the current one: a stale epoch is refused with ErrFenced
// and changes nothing, as a stale append is. A store that cannot fence
// has one owner, at epoch 0: it fences every other. An unknown
// conversation is ErrNotFound, whatever the epoch.
func testUpdate(t *testing.T, s core.Store) {
	ctx := context.Background()
	id := NewConversation(t, s)
	update := func(title string, epoch uint64) error {
		t.Helper()
		c, err := s.Conversation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		c.Title = title
		return s.UpdateConversation(ctx, c, epoch)
	}
	title := func() string {
		t.Helper()
		c, err := s.Conversation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return c.Title
	}
	current, stale := uint64(0), uint64(7)
	if f, ok := s.(core.Fencer); ok {
		old, _, err := f.Acquire(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if current, _, err = f.Acquire(ctx, id); err != nil {
			t.Fatal(err)
		}
		stale = old
	}
	for _, tt := range []struct {
		title   string
		epoch   uint64
		wantErr error
		want    string // the stored title after
	}{
		{"by the owner", current, nil, "by the owner"},
		{"by a stale owner", stale, core.ErrFenced, "by the owner"},
		{"by a tool", 0, nil, "by a tool"},
	} {
		err := update(tt.title, tt.epoch)
		if (err == nil) != (tt.wantErr == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
			t.Errorf("update %s (epoch %d): err = %v, want %v", tt.title, tt.epoch, err, tt.wantErr)
		}
		if got := title(); got != tt.want {
			t.Errorf("after the update %s: title %q, want %q", tt.title, got, tt.want)
		}
	}
	for _, epoch := range []uint64{0, stale} {
		missing := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle}
		if err := s.UpdateConversation(ctx, missing, epoch); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("update of an unknown conversation (epoch %d): %v, want ErrNotFound", epoch, err)
		}
	}
}

// SearchEvents and CountEvents answer exactly what filtering and sorting
// the whole log in memory (core.SearchEvents, core.CountEvents) answers,
// for every filter, both orders and every page.
func testSearch(t *testing.T, s core.Store) {
	ctx := context.Background()
	id := NewConversation(t, s)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	kinds := []string{core.KindMessage, "ActionEvent", "ObservationEvent"}
	sources := []core.Source{core.SourceUser, core.SourceAgent, core.SourceEnvironment}
	var log []*core.Event
	for i := 1; i <= 60; i++ {
		// Several events share a timestamp: ties are broken by Seq.
		e := &core.Event{ID: core.NewEventID(), Seq: uint64(i), Timestamp: t0.Add(time.Duration(i/3) * time.Second),
			Source: sources[i%3], Kind: kinds[(i/2)%3], Body: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		if err := e.Seal(); err != nil {
			t.Fatal(err)
		}
		log = append(log, e)
	}
	for i := 0; i < len(log); i += 25 {
		if err := s.AppendEvents(ctx, id, log[i:min(i+25, len(log))]); err != nil {
			t.Fatal(err)
		}
	}
	filters := []core.EventFilter{
		{},
		{Kind: "ActionEvent"},
		{Source: core.SourceAgent},
		{Kind: core.KindMessage, Source: core.SourceUser},
		{Kind: "NoSuchEvent"},
		{Since: t0.Add(5 * time.Second)},
		{Before: t0.Add(12 * time.Second)},
		{Since: t0.Add(4500 * time.Millisecond), Before: t0.Add(15 * time.Second), Kind: "ObservationEvent"},
		{Since: t0.Add(time.Hour)},
		{Before: t0},
	}
	for fi, f := range filters {
		if got, err := s.CountEvents(ctx, id, f); err != nil || got != core.CountEvents(log, f) {
			t.Errorf("filter %d: CountEvents = %d, %v, want %d", fi, got, err, core.CountEvents(log, f))
		}
		for _, order := range []core.SortOrder{core.SortTimestamp, core.SortTimestampDesc} {
			for _, limit := range []int{1, 7, 100} {
				name := fmt.Sprintf("filter %d %s limit %d", fi, order, limit)
				var cursor *core.Event
				pageID := ""
				for pages := 0; ; pages++ {
					got, err := s.SearchEvents(ctx, id, core.EventQuery{Filter: f, Order: order, PageID: pageID, Limit: limit})
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					want := core.SearchEvents(log, f, order, cursor, limit)
					if !samePage(got, want) {
						t.Fatalf("%s, page %d: got %s, want %s", name, pages, pageString(got), pageString(want))
					}
					if got.NextPageID == "" || pages > len(log) {
						break
					}
					pageID = got.NextPageID
					cursor = log[slices.IndexFunc(log, func(e *core.Event) bool { return e.ID == pageID })]
				}
			}
		}
	}
	// A page ID taken from a filtered-out event still pages from its place.
	got, err := s.SearchEvents(ctx, id, core.EventQuery{Filter: core.EventFilter{Kind: "ActionEvent"}, PageID: log[9].ID, Limit: 100})
	if want := core.SearchEvents(log, core.EventFilter{Kind: "ActionEvent"}, core.SortTimestamp, log[9], 100); err != nil || !samePage(got, want) {
		t.Errorf("page from a filtered-out event: %s, %v, want %s", pageString(got), err, pageString(want))
	}
	if _, err := s.SearchEvents(ctx, id, core.EventQuery{PageID: core.NewID()}); !errors.Is(err, core.ErrUnknownPageID) {
		t.Errorf("unknown page_id: %v, want ErrUnknownPageID", err)
	}
	other := NewConversation(t, s)
	if _, err := s.SearchEvents(ctx, other, core.EventQuery{PageID: log[0].ID}); !errors.Is(err, core.ErrUnknownPageID) {
		t.Errorf("another conversation's event as page_id: %v, want ErrUnknownPageID", err)
	}
	if _, err := s.SearchEvents(ctx, core.NewID(), core.EventQuery{}); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("unknown conversation: %v, want ErrNotFound", err)
	}
	if _, err := s.CountEvents(ctx, core.NewID(), core.EventFilter{}); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("count of an unknown conversation: %v, want ErrNotFound", err)
	}
}

func samePage(a, b core.Page[*core.Event]) bool {
	if a.NextPageID != b.NextPageID || len(a.Items) != len(b.Items) {
		return false
	}
	for i := range a.Items {
		if a.Items[i].ID != b.Items[i].ID || string(a.Items[i].Raw) != string(b.Items[i].Raw) || a.Items[i].Seq != b.Items[i].Seq {
			return false
		}
	}
	return true
}

func pageString(p core.Page[*core.Event]) string {
	seqs := make([]uint64, len(p.Items))
	for i, e := range p.Items {
		seqs[i] = e.Seq
	}
	return fmt.Sprintf("%v next=%q", seqs, p.NextPageID)
}

// BenchSearch measures SearchEvents and CountEvents over a 100,000-event
// log (one event in ten an ActionEvent), against what REST search did
// before the store could answer: load the whole log and filter it in Go.
// Each store's test file runs it against a fresh instance.
func BenchSearch(b *testing.B, s core.Store) {
	ctx := context.Background()
	const n = 100_000
	id := NewConversation(b, s)
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i += 5000 {
		evs := make([]*core.Event, 0, 5000)
		for j := i + 1; j <= i+5000; j++ {
			kind := core.KindMessage
			if j%10 == 0 {
				kind = "ActionEvent"
			}
			e := &core.Event{ID: core.NewEventID(), Seq: uint64(j), Timestamp: t0.Add(time.Duration(j) * time.Millisecond), Source: core.SourceAgent, Kind: kind, Body: []byte(`{"text":"` + fmt.Sprint(j) + `"}`)}
			if err := e.Seal(); err != nil {
				b.Fatal(err)
			}
			evs = append(evs, e)
		}
		if err := s.AppendEvents(ctx, id, evs); err != nil {
			b.Fatal(err)
		}
	}
	kind := core.EventFilter{Kind: "ActionEvent"}
	late := core.EventFilter{Since: t0.Add(90 * time.Second)}
	cases := []struct {
		name string
		run  func() (int, error)
	}{
		{"load-all-then-filter", func() (int, error) { // the old REST path, as the baseline
			evs, err := s.Events(ctx, id, 0, 0)
			return len(core.SearchEvents(evs, kind, core.SortTimestamp, nil, 100).Items), err
		}},
		{"search/first-page", func() (int, error) {
			p, err := s.SearchEvents(ctx, id, core.EventQuery{Limit: 100})
			return len(p.Items), err
		}},
		{"search/kind", func() (int, error) {
			p, err := s.SearchEvents(ctx, id, core.EventQuery{Filter: kind, Limit: 100})
			return len(p.Items), err
		}},
		{"search/since-desc", func() (int, error) {
			p, err := s.SearchEvents(ctx, id, core.EventQuery{Filter: late, Order: core.SortTimestampDesc, Limit: 100})
			return len(p.Items), err
		}},
		{"count/all", func() (int, error) { return s.CountEvents(ctx, id, core.EventFilter{}) }},
		{"count/kind", func() (int, error) { return s.CountEvents(ctx, id, kind) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				if got, err := c.run(); err != nil || got == 0 {
					b.Fatalf("%d, %v", got, err)
				}
			}
		})
	}
}

// An event's idempotency key is stored with it, read back with it, and
// finds it: the newest event of the conversation posted with that key.
func testKeys(t *testing.T, s core.Store) {
	ctx := context.Background()
	a, b := NewConversation(t, s), NewConversation(t, s)
	t0 := time.Now().UTC().Truncate(time.Microsecond)
	keyed := func(seq uint64, key string) *core.Event {
		e := Sealed(t, seq, t0, `{}`)
		e.IdempotencyKey = key
		return e
	}
	if err := s.AppendEvents(ctx, a, []*core.Event{keyed(1, "k1"), keyed(2, ""), keyed(3, "k2")}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEvents(ctx, a, []*core.Event{keyed(4, "k1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEvents(ctx, a, []*core.Event{keyed(5, strings.Repeat("x", core.MaxIdempotencyKey+1))}); err == nil {
		t.Error("a key over MaxIdempotencyKey bytes was stored")
	}
	for _, tt := range []struct {
		conv, key string
		want      uint64 // 0: not found
	}{{a, "k1", 4}, {a, "k2", 3}, {a, "nope", 0}, {b, "k1", 0}} {
		e, err := s.EventByKey(ctx, tt.conv, tt.key)
		switch {
		case tt.want == 0 && !errors.Is(err, core.ErrNotFound):
			t.Errorf("EventByKey(%q) = %v, %v; want ErrNotFound", tt.key, e, err)
		case tt.want != 0 && (err != nil || e.Seq != tt.want || e.IdempotencyKey != tt.key):
			t.Errorf("EventByKey(%q) = %+v, %v; want seq %d", tt.key, e, err, tt.want)
		}
	}
	evs, err := s.Events(ctx, a, 0, 0)
	if err != nil || len(evs) != 4 || evs[0].IdempotencyKey != "k1" || evs[1].IdempotencyKey != "" {
		t.Errorf("events read back lose their keys: %v", err)
	}
	if _, err := s.EventByKey(ctx, core.NewID(), "k1"); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("EventByKey of an unknown conversation = %v, want ErrNotFound", err)
	}
}

// A fork is a new conversation holding copies of events of another, with
// their IDs, renumbered from 1; it is stored whole or not at all, and from
// then on each conversation's log is its own.
func testFork(t *testing.T, s core.Store) {
	ctx := context.Background()
	src := NewConversation(t, s)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []*core.Event
	for i := 1; i <= 5; i++ {
		e := Sealed(t, uint64(i), t0.Add(time.Duration(i)*time.Second), fmt.Sprintf(`{"n":%d}`, i))
		if i == 2 {
			e.IdempotencyKey = "k"
		}
		evs = append(evs, e)
	}
	if err := s.AppendEvents(ctx, src, evs); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Hour)
	newFork := func() *core.Conversation {
		return &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle, CreatedAt: now, UpdatedAt: now,
			ForkedFromConversationID: src, Head: core.Head{LeafEventID: evs[2].ID, Seq: 3}}
	}
	// check fails unless conversation id holds exactly the source's events
	// at seqs, in order, renumbered from 1.
	check := func(id string, seqs ...uint64) {
		t.Helper()
		got, err := s.Events(ctx, id, 0, 0)
		if err != nil || len(got) != len(seqs) {
			t.Fatalf("fork %s holds %d events (%v), want %d", id, len(got), err, len(seqs))
		}
		for i, e := range got {
			want := evs[seqs[i]-1]
			if e.Seq != uint64(i+1) || e.ID != want.ID || string(e.Raw) != string(want.Raw) || !e.Timestamp.Equal(want.Timestamp) ||
				e.Kind != want.Kind || e.Source != want.Source || e.IdempotencyKey != "" {
				t.Errorf("fork event %d = %+v, want seq %d copying %+v without its key", i, e, i+1, want)
			}
			if byID, err := s.EventByID(ctx, id, want.ID); err != nil || byID.Seq != uint64(i+1) {
				t.Errorf("EventByID(fork, %s) = %v, %v; want seq %d", want.ID, byID, err, i+1)
			}
		}
		c, err := s.Conversation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		wantUpdated := now
		if len(seqs) > 0 {
			wantUpdated = evs[seqs[len(seqs)-1]-1].Timestamp
		}
		if c.ForkedFromConversationID != src || c.Head.LeafEventID != evs[2].ID || c.Head.Seq != 3 || !c.UpdatedAt.Equal(wantUpdated) {
			t.Errorf("fork read back = %+v, want forked_from %s, its head, updated_at %s", c, src, wantUpdated)
		}
	}

	prefix := newFork()
	if err := s.ForkConversation(ctx, prefix, core.ForkSource{ConversationID: src, Through: 3}); err != nil {
		t.Fatal(err)
	}
	check(prefix.ID, 1, 2, 3)
	branch := newFork()
	if err := s.ForkConversation(ctx, branch, core.ForkSource{ConversationID: src, Seqs: []uint64{1, 3, 5}}); err != nil {
		t.Fatal(err)
	}
	check(branch.ID, 1, 3, 5)
	empty := newFork()
	if err := s.ForkConversation(ctx, empty, core.ForkSource{ConversationID: src}); err != nil {
		t.Fatal(err)
	}
	check(empty.ID)
	if _, err := s.EventByKey(ctx, prefix.ID, "k"); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("EventByKey in the fork = %v, want ErrNotFound: keys are not copied", err)
	}
	if got, err := s.FirstSeqAtOrAfter(ctx, branch.ID, evs[2].Timestamp.Add(time.Millisecond)); err != nil || got != 3 {
		t.Errorf("FirstSeqAtOrAfter in the branch = %d, %v; want 3", got, err)
	}
	if page, err := s.SearchEvents(ctx, branch.ID, core.EventQuery{PageID: evs[2].ID, Limit: 10}); err != nil || len(page.Items) != 2 || page.Items[1].ID != evs[4].ID {
		t.Errorf("search the branch from page_id %s = %v, %v; want its last two events", evs[2].ID, page, err)
	}

	// Refused forks store nothing.
	for _, tt := range []struct {
		name string
		fork *core.Conversation
		from core.ForkSource
		want error
	}{
		{"taken id", &core.Conversation{ID: prefix.ID, CreatedAt: now, UpdatedAt: now}, core.ForkSource{ConversationID: src, Through: 5}, core.ErrConversationExists},
		{"unknown source", newFork(), core.ForkSource{ConversationID: core.NewID(), Through: 1}, core.ErrNotFound},
		{"past the log", newFork(), core.ForkSource{ConversationID: src, Through: 6}, core.ErrNotFound},
		{"unknown seq", newFork(), core.ForkSource{ConversationID: src, Seqs: []uint64{1, 2, 9}}, core.ErrNotFound},
	} {
		if err := s.ForkConversation(ctx, tt.fork, tt.from); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
		if tt.want == core.ErrConversationExists {
			continue
		}
		if _, err := s.Conversation(ctx, tt.fork.ID); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("%s: the refused fork is stored (%v)", tt.name, err)
		}
	}
	check(prefix.ID, 1, 2, 3)

	// Each log goes on by itself. An ID is unique within a log only: the
	// prefix may take the source's fourth event's ID, not its own first's.
	next := Sealed(t, 4, t0.Add(time.Minute), `{}`)
	next.ID = evs[3].ID
	if err := s.AppendEvents(ctx, prefix.ID, []*core.Event{next}); err != nil {
		t.Fatalf("append to the fork an ID only the source holds: %v", err)
	}
	twin := Sealed(t, 5, t0.Add(time.Minute), `{}`)
	twin.ID = evs[0].ID
	if err := s.AppendEvents(ctx, prefix.ID, []*core.Event{twin}); !errors.Is(err, core.ErrDuplicateEventID) {
		t.Errorf("append to the fork an ID it holds: %v, want ErrDuplicateEventID", err)
	}
	if got, _ := s.LastSeq(ctx, src); got != 5 {
		t.Errorf("the source's LastSeq = %d, want 5", got)
	}
	if e, err := s.EventByID(ctx, src, evs[3].ID); err != nil || e.Seq != 4 || string(e.Raw) != string(evs[3].Raw) {
		t.Errorf("the source's event 4 = %v, %v", e, err)
	}
	// Deleting the source leaves the forks whole, and deleting a fork the
	// others.
	if err := s.DeleteConversation(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteConversation(ctx, prefix.ID); err != nil {
		t.Fatal(err)
	}
	check(branch.ID, 1, 3, 5)
	if err := s.AppendEvents(ctx, branch.ID, []*core.Event{Sealed(t, 4, t0.Add(time.Minute), `{}`)}); err != nil {
		t.Errorf("append to the fork after its source was deleted: %v", err)
	}
	if _, err := s.EventByID(ctx, prefix.ID, evs[0].ID); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("EventByID in a deleted fork = %v, want ErrNotFound", err)
	}
}

// BenchFork measures ForkConversation copying a whole log of n events of
// about 1 KiB (what a long agent conversation holds), reporting events
// copied per second: what bounds conversations.max_fork_events, since a
// fork is one write. Each store's test file runs it against a fresh
// instance.
func BenchFork(b *testing.B, s core.Store, n int) {
	ctx := context.Background()
	id := NewConversation(b, s)
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	text := strings.Repeat("x", 1000)
	for i := 0; i < n; i += 1000 {
		evs := make([]*core.Event, 0, 1000)
		for j := i + 1; j <= min(n, i+1000); j++ {
			e := &core.Event{ID: core.NewEventID(), Seq: uint64(j), Timestamp: t0.Add(time.Duration(j) * time.Millisecond), Source: core.SourceAgent,
				Kind: core.KindMessage, ParentID: core.NewEventID(), Body: []byte(`{"text":"` + text + `"}`)}
			if err := e.Seal(); err != nil {
				b.Fatal(err)
			}
			evs = append(evs, e)
		}
		if err := s.AppendEvents(ctx, id, evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		f := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle, CreatedAt: t0, UpdatedAt: t0}
		if err := s.ForkConversation(ctx, f, core.ForkSource{ConversationID: id, Through: uint64(n)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
