package core

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// testLog returns n events, one a second from t0, with two events sharing
// each timestamp from seq 5 on so ties are exercised. Odd seqs are agent
// ActionEvents, even seqs user MessageEvents.
func testLog(n int) []*Event {
	out := make([]*Event, n)
	for i := range out {
		seq := uint64(i + 1)
		ts := t0.Add(time.Duration(i) * time.Second)
		if i >= 4 {
			ts = t0.Add(time.Duration(4+(i-4)/2) * time.Second)
		}
		e := &Event{ID: fmt.Sprintf("e%02d", seq), Seq: seq, Timestamp: ts, Source: SourceAgent, Kind: "ActionEvent"}
		if seq%2 == 0 {
			e.Source, e.Kind = SourceUser, KindMessage
		}
		out[i] = e
	}
	return out
}

func eventIDs(es []*Event) []string {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}

func TestParseLimit(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"", 100, false},
		{"1", 1, false},
		{"100", 100, false},
		{"37", 37, false},
		{"0", 0, true},
		{"-1", 0, true},
		{"101", 0, true},
		{"ten", 0, true},
		{"1.5", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLimit(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseLimit(%q) = %d, %v; want %d, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseOrders(t *testing.T) {
	tests := []struct {
		name    string
		parse   func(string) (SortOrder, error)
		in      string
		want    SortOrder
		wantErr bool
	}{
		{"event default", ParseEventOrder, "", SortTimestamp, false},
		{"event asc", ParseEventOrder, "TIMESTAMP", SortTimestamp, false},
		{"event desc lower", ParseEventOrder, "timestamp_desc", SortTimestampDesc, false},
		{"event refuses conversation order", ParseEventOrder, "CREATED_AT", "", true},
		{"event junk", ParseEventOrder, "SIDEWAYS", "", true},
		{"conv default", ParseConversationOrder, "", SortCreatedAt, false},
		{"conv created desc", ParseConversationOrder, "CREATED_AT_DESC", SortCreatedAtDesc, false},
		{"conv updated", ParseConversationOrder, "UPDATED_AT", SortUpdatedAt, false},
		{"conv updated desc", ParseConversationOrder, "updated_at_desc", SortUpdatedAtDesc, false},
		{"conv refuses event order", ParseConversationOrder, "TIMESTAMP", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parse(%q) = %q, %v; want %q, err=%v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	for _, s := range []string{"idle", "running", "paused", "waiting_for_confirmation", "finished", "error", "stuck", "deleting", "IDLE"} {
		if _, err := ParseStatus(s); err != nil {
			t.Errorf("ParseStatus(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "sleeping"} {
		if _, err := ParseStatus(s); err == nil {
			t.Errorf("ParseStatus(%q) = nil error, want one", s)
		}
	}
}

func TestEventFilterMatch(t *testing.T) {
	e := &Event{ID: "x", Timestamp: t0, Source: SourceAgent, Kind: "ActionEvent"}
	tests := []struct {
		name string
		f    EventFilter
		want bool
	}{
		{"zero filter", EventFilter{}, true},
		{"kind match", EventFilter{Kind: "ActionEvent"}, true},
		{"kind mismatch", EventFilter{Kind: "MessageEvent"}, false},
		{"kind is case-sensitive", EventFilter{Kind: "actionevent"}, false},
		{"source match", EventFilter{Source: SourceAgent}, true},
		{"source mismatch", EventFilter{Source: SourceUser}, false},
		{"gte equal is in", EventFilter{Since: t0}, true},
		{"gte after is out", EventFilter{Since: t0.Add(time.Microsecond)}, false},
		{"lt equal is out", EventFilter{Before: t0}, false},
		{"lt after is in", EventFilter{Before: t0.Add(time.Microsecond)}, true},
		{"window", EventFilter{Since: t0.Add(-time.Second), Before: t0.Add(time.Second)}, true},
		{"all match", EventFilter{Kind: "ActionEvent", Source: SourceAgent, Since: t0, Before: t0.Add(time.Second)}, true},
	}
	for _, tt := range tests {
		if got := tt.f.Match(e); got != tt.want {
			t.Errorf("%s: Match = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestSearchEvents(t *testing.T) {
	log := testLog(10) // e01..e10; e05/e06, e07/e08, e09/e10 share timestamps
	tests := []struct {
		name     string
		f        EventFilter
		order    SortOrder
		cursor   string
		limit    int
		want     []string
		wantNext string
	}{
		{"all asc", EventFilter{}, SortTimestamp, "", 100, eventIDs(log), ""},
		{"first page", EventFilter{}, SortTimestamp, "", 3, []string{"e01", "e02", "e03"}, "e04"},
		{"cursor is included", EventFilter{}, SortTimestamp, "e04", 3, []string{"e04", "e05", "e06"}, "e07"},
		{"tie broken by seq", EventFilter{}, SortTimestamp, "e06", 2, []string{"e06", "e07"}, "e08"},
		{"last page exact", EventFilter{}, SortTimestamp, "e08", 3, []string{"e08", "e09", "e10"}, ""},
		{"limit equals size", EventFilter{}, SortTimestamp, "", 10, eventIDs(log), ""},
		{"limit one", EventFilter{}, SortTimestamp, "e10", 1, []string{"e10"}, ""},
		{"desc first page", EventFilter{}, SortTimestampDesc, "", 3, []string{"e10", "e09", "e08"}, "e07"},
		{"desc cursor", EventFilter{}, SortTimestampDesc, "e07", 3, []string{"e07", "e06", "e05"}, "e04"},
		{"kind filter", EventFilter{Kind: KindMessage}, SortTimestamp, "", 2, []string{"e02", "e04"}, "e06"},
		{"source filter desc", EventFilter{Source: SourceAgent}, SortTimestampDesc, "", 2, []string{"e09", "e07"}, "e05"},
		{"cursor filtered out resumes at successor", EventFilter{Kind: KindMessage}, SortTimestamp, "e05", 2, []string{"e06", "e08"}, "e10"},
		{"cursor filtered out desc", EventFilter{Kind: KindMessage}, SortTimestampDesc, "e05", 5, []string{"e04", "e02"}, ""},
		{"time window", EventFilter{Since: t0.Add(2 * time.Second), Before: t0.Add(5 * time.Second)}, SortTimestamp, "", 100, []string{"e03", "e04", "e05", "e06"}, ""},
		{"empty result", EventFilter{Kind: "NopeEvent"}, SortTimestamp, "", 100, nil, ""},
	}
	byID := map[string]*Event{}
	for _, e := range log {
		byID[e.ID] = e
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page := SearchEvents(log, tt.f, tt.order, byID[tt.cursor], tt.limit)
			if got := eventIDs(page.Items); !slices.Equal(got, tt.want) && len(got)+len(tt.want) > 0 {
				t.Errorf("items = %v, want %v", got, tt.want)
			}
			if page.NextPageID != tt.wantNext {
				t.Errorf("next = %q, want %q", page.NextPageID, tt.wantNext)
			}
		})
	}
}

func TestSearchEventsDoesNotReorderInput(t *testing.T) {
	log := testLog(6)
	shuffled := []*Event{log[3], log[0], log[5], log[1], log[4], log[2]}
	before := eventIDs(shuffled)
	page := SearchEvents(shuffled, EventFilter{}, SortTimestamp, nil, 100)
	if got := eventIDs(page.Items); !slices.Equal(got, eventIDs(log)) {
		t.Errorf("items = %v, want %v", got, eventIDs(log))
	}
	if got := eventIDs(shuffled); !slices.Equal(got, before) {
		t.Errorf("input changed to %v, want %v", got, before)
	}
}

// TestPagingCoversEverythingOnce walks every page of every order and limit
// and checks that the pages concatenate to the full sorted result: no item
// is skipped and none repeats.
func TestPagingCoversEverythingOnce(t *testing.T) {
	log := testLog(23)
	byID := map[string]*Event{}
	for _, e := range log {
		byID[e.ID] = e
	}
	filters := []EventFilter{{}, {Kind: KindMessage}, {Source: SourceAgent, Since: t0.Add(3 * time.Second)}}
	for _, f := range filters {
		for _, order := range []SortOrder{SortTimestamp, SortTimestampDesc} {
			all := SearchEvents(log, f, order, nil, 1000).Items
			if len(all) > MaxPageLimit {
				t.Fatalf("test log too long")
			}
			for limit := 1; limit <= len(all)+1; limit++ {
				var got []string
				cursor := ""
				for pages := 0; ; pages++ {
					if pages > len(all)+1 {
						t.Fatalf("%+v %s limit %d: paging does not end", f, order, limit)
					}
					page := SearchEvents(log, f, order, byID[cursor], limit)
					if len(page.Items) > limit {
						t.Fatalf("page of %d items over limit %d", len(page.Items), limit)
					}
					got = append(got, eventIDs(page.Items)...)
					if page.NextPageID == "" {
						break
					}
					cursor = page.NextPageID
				}
				if want := eventIDs(all); !slices.Equal(got, want) {
					t.Errorf("%+v %s limit %d: pages = %v, want %v", f, order, limit, got, want)
				}
			}
		}
	}
}

func TestCountEvents(t *testing.T) {
	log := testLog(10)
	tests := []struct {
		f    EventFilter
		want int
	}{
		{EventFilter{}, 10},
		{EventFilter{Kind: KindMessage}, 5},
		{EventFilter{Source: SourceAgent, Kind: KindMessage}, 0},
		{EventFilter{Since: t0.Add(4 * time.Second)}, 6},
		{EventFilter{Before: t0.Add(4 * time.Second)}, 4},
	}
	for _, tt := range tests {
		if got := CountEvents(log, tt.f); got != tt.want {
			t.Errorf("CountEvents(%+v) = %d, want %d", tt.f, got, tt.want)
		}
	}
}

func testConversations() []*Conversation {
	// c1..c5: created in order, updated in reverse order; c4 and c5 share
	// their created_at so the ID tiebreak is exercised.
	var out []*Conversation
	for i := 1; i <= 5; i++ {
		created := t0.Add(time.Duration(min(i, 4)) * time.Minute)
		out = append(out, &Conversation{
			ID:              fmt.Sprintf("c%d", i),
			ExecutionStatus: StatusIdle,
			CreatedAt:       created,
			UpdatedAt:       t0.Add(time.Duration(10-i) * time.Hour),
		})
	}
	out[1].ExecutionStatus = StatusRunning
	out[3].ExecutionStatus = StatusRunning
	return out
}

func convIDs(cs []*Conversation) []string {
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	return ids
}

func TestSearchConversations(t *testing.T) {
	convs := testConversations()
	byID := map[string]*Conversation{}
	for _, c := range convs {
		byID[c.ID] = c
	}
	// Shuffle the input: the store returns conversations in no order.
	input := []*Conversation{convs[2], convs[4], convs[0], convs[3], convs[1]}
	tests := []struct {
		name     string
		f        ConversationFilter
		order    SortOrder
		cursor   string
		limit    int
		want     []string
		wantNext string
	}{
		{"created asc", ConversationFilter{}, SortCreatedAt, "", 100, []string{"c1", "c2", "c3", "c4", "c5"}, ""},
		{"created desc", ConversationFilter{}, SortCreatedAtDesc, "", 100, []string{"c5", "c4", "c3", "c2", "c1"}, ""},
		{"updated asc", ConversationFilter{}, SortUpdatedAt, "", 100, []string{"c5", "c4", "c3", "c2", "c1"}, ""},
		{"updated desc", ConversationFilter{}, SortUpdatedAtDesc, "", 100, []string{"c1", "c2", "c3", "c4", "c5"}, ""},
		{"first page", ConversationFilter{}, SortCreatedAt, "", 2, []string{"c1", "c2"}, "c3"},
		{"cursor included", ConversationFilter{}, SortCreatedAt, "c3", 2, []string{"c3", "c4"}, "c5"},
		{"tie on created_at", ConversationFilter{}, SortCreatedAt, "c5", 2, []string{"c5"}, ""},
		{"status filter", ConversationFilter{Status: StatusRunning}, SortCreatedAt, "", 100, []string{"c2", "c4"}, ""},
		{"scope filter", ConversationFilter{Allow: func(id string) bool { return id != "c2" }}, SortCreatedAt, "", 2, []string{"c1", "c3"}, "c4"},
		{"cursor filtered out", ConversationFilter{Status: StatusRunning}, SortCreatedAt, "c3", 100, []string{"c4"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page := SearchConversations(input, tt.f, tt.order, byID[tt.cursor], tt.limit)
			if got := convIDs(page.Items); !slices.Equal(got, tt.want) {
				t.Errorf("items = %v, want %v", got, tt.want)
			}
			if page.NextPageID != tt.wantNext {
				t.Errorf("next = %q, want %q", page.NextPageID, tt.wantNext)
			}
			if got := CountConversations(input, tt.f); tt.cursor == "" && tt.limit >= 5 && got != len(tt.want) {
				t.Errorf("count = %d, want %d", got, len(tt.want))
			}
		})
	}
	if got := convIDs(input); !slices.Equal(got, []string{"c3", "c5", "c1", "c4", "c2"}) {
		t.Errorf("input reordered to %v", got)
	}
}
