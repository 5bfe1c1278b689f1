package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/memstore"
)

func TestParseForkRequest(t *testing.T) {
	title := "T"
	for _, tt := range []struct {
		name, body string
		want       core.ForkRequest
		wantStatus int // 0: parsed
		wantDetail string
	}{
		{"no body", "", core.ForkRequest{}, 0, ""},
		{"null", "null", core.ForkRequest{}, 0, ""},
		{"empty object", "{}", core.ForkRequest{}, 0, ""},
		{"what the SDK sends", `{"reset_metrics":true}`, core.ForkRequest{}, 0, ""},
		{"every field", `{"id":"` + strings.ToUpper(convA) + `","title":"T","tags":{"env":"x"},"reset_metrics":false,"from_event_id":"e","extra":1}`,
			core.ForkRequest{ID: convA, Title: &title, Tags: map[string]string{"env": "x"}, KeepMetrics: true, FromEventID: "e"}, 0, ""},
		{"nulls", `{"id":null,"title":null,"tags":null,"from_event_id":null}`, core.ForkRequest{}, 0, ""},
		{"hex id", `{"id":"` + strings.ReplaceAll(convA, "-", "") + `"}`, core.ForkRequest{ID: convA}, 0, ""},
		{"title of 200", `{"title":"` + strings.Repeat("é", 200) + `"}`, core.ForkRequest{Title: ptr(strings.Repeat("é", 200))}, 0, ""},
		{"id not a UUID", `{"id":"x"}`, core.ForkRequest{}, 400, "id is not a UUID"},
		{"id not a string", `{"id":1}`, core.ForkRequest{}, 400, `field "id" has the wrong type`},
		{"title of 201", `{"title":"` + strings.Repeat("a", 201) + `"}`, core.ForkRequest{}, 400, "title: must be at most 200 characters, got 201"},
		{"bad tag name", `{"tags":{"Team":"x"}}`, core.ForkRequest{}, 400, `tags: tag name "Team" must be lower-case letters and digits`},
		{"tags not an object", `{"tags":["x"]}`, core.ForkRequest{}, 400, "tags: must be an object of strings"},
		{"reset_metrics null", `{"reset_metrics":null}`, core.ForkRequest{}, 400, `"reset_metrics" must be true or false`},
		{"reset_metrics a string", `{"reset_metrics":"no"}`, core.ForkRequest{}, 400, `"reset_metrics" must be true or false`},
		{"empty from_event_id", `{"from_event_id":""}`, core.ForkRequest{}, 404, "Unknown from_event_id: "},
		{"not an object", `[1]`, core.ForkRequest{}, 400, "request body must be a JSON object"},
		{"not JSON", `{`, core.ForkRequest{}, 400, "request body is not valid JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseForkRequest([]byte(tt.body))
			if tt.wantStatus == 0 {
				if err != nil || !sameFork(got, tt.want) {
					t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			var ae *apiError
			if !errors.As(forkError(err, got.ID), &ae) || ae.status != tt.wantStatus || ae.detail != tt.wantDetail {
				t.Errorf("err = %v, want %d %q", err, tt.wantStatus, tt.wantDetail)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func sameFork(a, b core.ForkRequest) bool {
	return a.ID == b.ID && deref(a.Title) == deref(b.Title) && fmt.Sprint(a.Tags) == fmt.Sprint(b.Tags) &&
		a.KeepMetrics == b.KeepMetrics && a.FromEventID == b.FromEventID
}

func TestParseEventID(t *testing.T) {
	for _, tt := range []struct {
		raw        string
		want       string
		wantStatus int
	}{
		{"", "", 0},
		{"null", "", 0},
		{`"e-1"`, "e-1", 0},
		{`""`, "", 404},
		{`5`, "", 400},
		{`{"id":"e"}`, "", 400},
	} {
		got, err := parseEventID(json.RawMessage(tt.raw))
		var ae *apiError
		switch {
		case tt.wantStatus == 0 && (err != nil || got != tt.want):
			t.Errorf("event_id %s = %q, %v; want %q", tt.raw, got, err, tt.want)
		case tt.wantStatus != 0 && (!errors.As(err, &ae) || ae.status != tt.wantStatus):
			t.Errorf("event_id %s: err = %v, want %d", tt.raw, err, tt.wantStatus)
		}
	}
}

// actorBackend is the real actor system, authenticating with the fake
// backend's keys (keyAll, keyScoped, ...).
type actorBackend struct {
	*actors.System
	keys *fakeBackend
}

func (b actorBackend) Authenticate(ctx context.Context, req *core.Request) core.Result {
	return b.keys.Authenticate(ctx, req)
}

// newActorAPI serves the REST API over a real actor system on a memstore.
func newActorAPI(t *testing.T, conv config.Conversations) (*testAPI, *memstore.Store) {
	t.Helper()
	st := memstore.New()
	sys, err := actors.New(actors.Options{Store: st, Chains: staticChains{}, Conversations: conv})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Shutdown(context.Background()) })
	mux := http.NewServeMux()
	logs := &syncBuffer{}
	mux.Handle("/api/", newRESTHandler(actorBackend{sys, newFakeBackend()}, st, testMaxBody, slog.New(slog.NewTextHandler(logs, nil))))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testAPI{t: t, srv: srv, logs: logs}, st
}

type eventPage struct {
	Items []struct {
		ID       string `json:"id"`
		ParentID string `json:"parent_id"`
		Kind     string `json:"kind"`
	} `json:"items"`
}

// POST /fork and /navigate over the real actor system: upstream's answers
// and errors, and what each leaves in the store.
func TestForkAndNavigateREST(t *testing.T) {
	api, st := newActorAPI(t, config.Conversations{IdleTimeout: 0, MaxForkEvents: 4})
	ctx := context.Background()
	api.do("POST", "/api/conversations", keyAll, `{"conversation_id":"`+convA+`","tags":{"team":"a"},"initial_message":{"role":"user","content":"first"}}`).mustStatus(t, 201)
	api.post(convA, "second")
	src := decode[eventPage](t, api.do("GET", "/api/conversations/"+convA+"/events/search", keyAll, "").mustStatus(t, 200))
	if len(src.Items) != 2 || src.Items[1].ParentID != src.Items[0].ID {
		t.Fatalf("source events = %+v, want two, the second the first's child", src.Items)
	}
	first, second := src.Items[0].ID, src.Items[1].ID

	// A fork with no body: the whole log, a new id, the source's HEAD.
	whole := decode[core.ConversationInfo](t, api.do("POST", "/api/conversations/"+convA+"/fork", keyAll, "").mustStatus(t, 201))
	if whole.ID == convA || deref(whole.ForkedFromConversationID) != convA || whole.ForkedFromEventID != nil ||
		deref(whole.LeafEventID) != second || whole.Title != nil || len(whole.Tags) != 0 || whole.ExecutionStatus != core.StatusIdle {
		t.Errorf("whole fork = %+v", whole)
	}
	forked := decode[eventPage](t, api.do("GET", "/api/conversations/"+whole.ID+"/events/search", keyAll, "").mustStatus(t, 200))
	if len(forked.Items) != 2 || forked.Items[0].ID != first || forked.Items[1].ID != second {
		t.Errorf("the fork's events = %+v, want the source's, same IDs, same order", forked.Items)
	}
	api.do("GET", "/api/conversations/"+whole.ID+"/events/"+second, keyAll, "").mustStatus(t, 200)

	// A branch, into a given id, titled and tagged.
	r := api.do("POST", "/api/conversations/"+convA+"/fork", keyAll,
		`{"id":"`+convB+`","title":"Branch","tags":{"env":"x"},"reset_metrics":false,"from_event_id":"`+first+`"}`).mustStatus(t, 201)
	branch := decode[core.ConversationInfo](t, r)
	if branch.ID != convB || deref(branch.Title) != "Branch" || branch.Tags["title"] != "Branch" || branch.Tags["env"] != "x" ||
		deref(branch.ForkedFromEventID) != first || deref(branch.LeafEventID) != first {
		t.Errorf("branch fork = %s", r.body)
	}
	if n := string(api.do("GET", "/api/conversations/"+convB+"/events/count", keyAll, "").mustStatus(t, 200).body); n != "1" {
		t.Errorf("the branch holds %s events, want 1", n)
	}

	for _, tt := range []struct {
		name, path, key, body string
		wantStatus            int
		wantDetail            string
	}{
		{"a taken id", convA + "/fork", keyAll, `{"id":"` + convB + `"}`, 409, "Conversation with id " + convB + " already exists"},
		{"the source's own id", convA + "/fork", keyAll, `{"id":"` + convA + `"}`, 409, "Conversation with id " + convA + " already exists"},
		{"an unknown source", convC + "/fork", keyAll, "", 404, "Source conversation not found"},
		{"an unknown event", convA + "/fork", keyAll, `{"from_event_id":"nope"}`, 404, "Unknown from_event_id: nope"},
		{"a bad id", convA + "/fork", keyAll, `{"id":"nope"}`, 400, "id is not a UUID"},
		{"scoped, without an id", convA + "/fork", keyScoped, "", 403, "Forbidden: a credential limited to some conversations must give the fork an id it may use"},
		{"scoped, into another", convA + "/fork", keyScoped, `{"id":"` + convC + `"}`, 403, "Forbidden: a credential limited to some conversations must give the fork an id it may use"},
		{"scoped, from another", convB + "/fork", keyScoped, `{"id":"` + convA + `"}`, 403, "Forbidden"},
		{"navigate without a body", convA + "/navigate", keyAll, "", 400, "request body is required"},
		{"navigate to a number", convA + "/navigate", keyAll, `{"event_id":5}`, 400, `"event_id" must be a string or null`},
		{"navigate to an unknown event", convA + "/navigate", keyAll, `{"event_id":"nope"}`, 404, "Unknown event_id: nope"},
		{"navigate to another's event", convC + "/navigate", keyAll, `{"event_id":"` + first + `"}`, 404, "Conversation not found"},
		{"navigate an unknown conversation", convC + "/navigate", keyAll, `{"event_id":null}`, 404, "Conversation not found"},
		{"navigate another's", convB + "/navigate", keyScoped, `{"event_id":null}`, 403, "Forbidden"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := api.do("POST", "/api/conversations/"+tt.path, tt.key, tt.body).mustStatus(t, tt.wantStatus)
			if d := r.detail(t); d != tt.wantDetail {
				t.Errorf("detail = %q, want %q", d, tt.wantDetail)
			}
		})
	}

	// Navigate: to the first event, then to none; the next events branch.
	info := decode[core.ConversationInfo](t, api.do("POST", "/api/conversations/"+convA+"/navigate", keyAll, `{"event_id":"`+first+`"}`).mustStatus(t, 200))
	if deref(info.LeafEventID) != first || info.ID != convA {
		t.Errorf("after navigate: leaf_event_id %v, want %s", deref(info.LeafEventID), first)
	}
	api.post(convA, "third")
	info = decode[core.ConversationInfo](t, api.do("POST", "/api/conversations/"+convA+"/navigate", keyAll, `{}`).mustStatus(t, 200))
	if info.LeafEventID != nil {
		t.Errorf("after navigate to null: leaf_event_id %v, want null", deref(info.LeafEventID))
	}
	api.post(convA, "fourth")
	evs := decode[eventPage](t, api.do("GET", "/api/conversations/"+convA+"/events/search", keyAll, "").mustStatus(t, 200)).Items
	if len(evs) != 4 || evs[2].ParentID != first || evs[3].ParentID != core.RootParentID {
		t.Errorf("events after navigating = %+v, want third a child of %s, fourth a new root", evs, first)
	}
	if got := decode[core.ConversationInfo](t, api.do("GET", "/api/conversations/"+convA, keyAll, "").mustStatus(t, 200)); len(got.Tags) != 1 || got.Tags["team"] != "a" {
		t.Errorf("the source's tags = %v, want them unchanged", got.Tags)
	}

	// conversations.max_fork_events (4) is more than the whole log (4) of
	// convA allows once a fifth event lands.
	api.post(convA, "fifth")
	r = api.do("POST", "/api/conversations/"+convA+"/fork", keyAll, "").mustStatus(t, 400)
	if d := r.detail(t); d != "the fork would copy 5 events; at most 4 may be copied (conversations.max_fork_events)" {
		t.Errorf("detail = %q", d)
	}
	// A scoped principal may fork into a conversation it may use: past
	// the scope check, this one is taken.
	api.do("POST", "/api/conversations/"+convA+"/fork", keyScoped, `{"id":"`+convA+`","from_event_id":"`+first+`"}`).mustStatus(t, 409)
	all, _ := st.Conversations(ctx)
	if len(all) != 3 {
		t.Errorf("%d conversations stored, want the source and two forks: no refused fork left anything", len(all))
	}
}
