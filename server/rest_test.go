package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/memstore"
)

// Keys of the fake backend. keyAll sees everything; keyScoped only convA.
const (
	keyAll     = "k3y-all+@#$/%?&="
	keyRuntime = "runtime-key-456"
	keyScoped  = "scoped-key-123"
	keyError   = "plugin-down"
	keyNoPrin  = "no-principal"
	keyOld     = "expired-key"

	convA = "0b8e3c52-5f0a-4a57-9c3b-8e3f1a2b3c4d"
	convB = "1c9f4d63-6a1b-4b68-8d4c-9f402b3c4d5e"
	convC = "2da05e74-7b2c-4c79-9e5d-a0513c4d5e6f"
)

// fakeBackend is the actor system as REST sees it, built on memstore. It
// assigns event Seq, ID and timestamp (one step apart) as the conversation
// actor would.
type fakeBackend struct {
	controlBackend // nil: the control commands are tested over the real actors
	store          *memstore.Store

	mu       sync.Mutex
	clock    time.Time
	step     time.Duration
	postErr  error
	lastReq  *core.Request
	requests int
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		store: memstore.New(),
		clock: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		step:  time.Second,
	}
}

func (f *fakeBackend) Authenticate(_ context.Context, req *core.Request) core.Result {
	f.mu.Lock()
	f.lastReq = req
	f.requests++
	f.mu.Unlock()
	key := req.Header.Get("X-Session-API-Key")
	if key == "" {
		key = req.QueryValue("session_api_key")
	}
	switch key {
	case "":
		return core.Denied(core.ReasonNoCredentials)
	case keyAll:
		return core.Allowed(&core.Principal{Subject: "all"})
	case keyRuntime:
		return core.Allowed(&core.Principal{Subject: "runtime", Roles: []string{core.RoleRuntime}})
	case keyScoped:
		return core.Allowed(&core.Principal{Subject: "scoped", Scopes: []string{strings.ToUpper(convA)}})
	case keyError:
		return core.Failed(errors.New("plugin crashed"))
	case keyNoPrin:
		return core.Result{Decision: core.Allow}
	case keyOld:
		return core.Allowed(&core.Principal{Subject: "old", Expiry: time.Now().Add(-time.Minute)})
	}
	return core.Denied("unknown key")
}

func (f *fakeBackend) CreateConversation(ctx context.Context, c *core.Conversation) (*core.Conversation, bool, error) {
	return f.store.CreateConversation(ctx, c)
}

// PublishEvent stores a runtime's event as PostEvent does.
func (f *fakeBackend) PublishEvent(ctx context.Context, id string, p *core.Published) (*core.Event, error) {
	return f.PostEvent(ctx, id, p.Source, p.Kind, p.Body)
}

func (f *fakeBackend) PostEvent(ctx context.Context, id string, source core.Source, kind string, body json.RawMessage) (*core.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.postErr != nil {
		return nil, f.postErr
	}
	last, err := f.store.LastSeq(ctx, id)
	if err != nil {
		return nil, err
	}
	f.clock = f.clock.Add(f.step)
	e := &core.Event{ID: core.NewID(), Seq: last + 1, Timestamp: f.clock, Source: source, Kind: kind, Body: body}
	if err := e.Seal(); err != nil {
		return nil, err
	}
	return e, f.store.AppendEvents(ctx, id, []*core.Event{e})
}

func (f *fakeBackend) Topology() (actors.Topology, bool) { return actors.Topology{}, false }

func (f *fakeBackend) DeleteConversation(ctx context.Context, id string) error {
	return f.store.DeleteConversation(ctx, id)
}

func (f *fakeBackend) lastRequest() *core.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastReq
}

// testAPI is a REST handler on a real listener with a captured log.
type testAPI struct {
	t       *testing.T
	backend *fakeBackend
	srv     *httptest.Server
	logs    *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const testMaxBody = 4 << 10

func newTestAPI(t *testing.T) *testAPI {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := newFakeBackend()
	mux := http.NewServeMux()
	mux.Handle("/api/", newRESTHandler(b, b.store, testMaxBody, log))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testAPI{t: t, backend: b, srv: srv, logs: logs}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request with key in X-Session-API-Key ("" for none).
func (a *testAPI) do(method, path, key, body string) response {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.srv.URL+path, rd)
	if err != nil {
		a.t.Fatalf("new request: %v", err)
	}
	if key != "" {
		req.Header.Set("X-Session-API-Key", key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatalf("read body: %v", err)
	}
	return response{status: res.StatusCode, header: res.Header, body: data}
}

// mustStatus fails unless r has status want.
func (r response) mustStatus(t *testing.T, want int) response {
	t.Helper()
	if r.status != want {
		t.Fatalf("status = %d, want %d; body %s", r.status, want, r.body)
	}
	return r
}

func (r response) detail(t *testing.T) string {
	t.Helper()
	var d struct {
		Detail *string `json:"detail"`
	}
	if err := json.Unmarshal(r.body, &d); err != nil || d.Detail == nil {
		t.Fatalf("body %s is not {\"detail\": ...}", r.body)
	}
	return *d.Detail
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

// create makes a conversation with id and fails the test otherwise.
func (a *testAPI) create(id string) {
	a.t.Helper()
	a.do("POST", "/api/conversations", keyAll, fmt.Sprintf(`{"conversation_id":%q}`, id)).mustStatus(a.t, http.StatusCreated)
}

// post appends a user message and fails the test otherwise.
func (a *testAPI) post(id, text string) {
	a.t.Helper()
	a.do("POST", "/api/conversations/"+id+"/events", keyAll, fmt.Sprintf(`{"role":"user","content":%q}`, text)).mustStatus(a.t, http.StatusOK)
}

func (a *testAPI) setStatus(id string, st core.ExecutionStatus) {
	a.t.Helper()
	ctx := context.Background()
	c, err := a.backend.store.Conversation(ctx, id)
	if err != nil {
		a.t.Fatal(err)
	}
	c.ExecutionStatus = st
	if err := a.backend.store.UpdateConversation(ctx, c, 0); err != nil {
		a.t.Fatal(err)
	}
}

func TestRESTAuthentication(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	paths := []struct{ method, path string }{
		{"GET", "/api/conversations/search"},
		{"GET", "/api/conversations/count"},
		{"GET", "/api/conversations?ids=" + convA},
		{"POST", "/api/conversations"},
		{"GET", "/api/conversations/" + convA},
		{"DELETE", "/api/conversations/" + convA},
		{"GET", "/api/conversations/" + convA + "/events/search"},
		{"GET", "/api/conversations/" + convA + "/events/count"},
		{"GET", "/api/conversations/" + convA + "/events/nope"},
		{"POST", "/api/conversations/" + convA + "/events"},
		{"GET", "/api/conversations/not-a-uuid"},
		{"GET", "/api/unknown"},
		{"PUT", "/api/conversations/" + convA},
	}
	tests := []struct {
		name       string
		key        string
		wantStatus int
		wantDetail string
	}{
		{"no key", "", http.StatusUnauthorized, "Unauthorized"},
		{"wrong key", "wrong", http.StatusUnauthorized, "Unauthorized"},
		{"key case matters", strings.ToUpper(keyScoped), http.StatusUnauthorized, "Unauthorized"},
		{"expired principal", keyOld, http.StatusUnauthorized, "Unauthorized"},
		{"chain error", keyError, http.StatusServiceUnavailable, "Authentication is temporarily unavailable"},
		{"allow without principal", keyNoPrin, http.StatusServiceUnavailable, "Authentication is temporarily unavailable"},
	}
	for _, tt := range tests {
		for _, p := range paths {
			t.Run(tt.name+" "+p.method+" "+p.path, func(t *testing.T) {
				r := api.do(p.method, p.path, tt.key, `{}`).mustStatus(t, tt.wantStatus)
				if got := r.detail(t); got != tt.wantDetail {
					t.Errorf("detail = %q, want %q", got, tt.wantDetail)
				}
				if got := r.header.Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type = %q", got)
				}
				wantRetry := ""
				if tt.wantStatus == http.StatusServiceUnavailable {
					wantRetry = restRetryAfter
				}
				if got := r.header.Get("Retry-After"); got != wantRetry {
					t.Errorf("Retry-After = %q, want %q", got, wantRetry)
				}
			})
		}
	}
	if _, err := api.backend.store.Conversation(context.Background(), convA); err != nil {
		t.Errorf("a refused DELETE removed the conversation: %v", err)
	}
	if !strings.Contains(api.logs.String(), "plugin crashed") {
		t.Errorf("the chain error was not logged:\n%s", api.logs.String())
	}
}

func TestRESTAuthRequest(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	hex := strings.ReplaceAll(strings.ToUpper(convA), "-", "")
	req, _ := http.NewRequest("GET", api.srv.URL+"/api/conversations/"+hex+"/events/ev1?session_api_key="+keyScoped+"&x=a+b", nil)
	req.Header.Set("x-session-api-key", keyAll)
	req.Header.Set("Origin", "https://app.example")
	res, err := api.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	got := api.backend.lastRequest()
	if got.Route != core.RouteREST || got.Method != "GET" {
		t.Errorf("route, method = %q, %q", got.Route, got.Method)
	}
	if got.Path != "/api/conversations/"+hex+"/events/ev1" {
		t.Errorf("path = %q", got.Path)
	}
	if want := map[string]string{paramConversation: convA, paramEvent: "ev1"}; !mapsEqual(got.PathParams, want) {
		t.Errorf("path params = %v, want %v", got.PathParams, want)
	}
	if v := got.QueryValue("x"); v != "a+b" {
		t.Errorf("query x = %q, want a+b: '+' must stay a plus", v)
	}
	if v := got.Header.Get("X-Session-Api-Key"); v != keyAll {
		t.Errorf("header key not handed over")
	}
	if got.Origin != "https://app.example" || got.RemoteAddr == "" {
		t.Errorf("origin, remote = %q, %q", got.Origin, got.RemoteAddr)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRESTScopes(t *testing.T) {
	api := newTestAPI(t)
	for _, id := range []string{convA, convB, convC} {
		api.create(id)
		api.post(id, "hi")
	}
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantBody                 string // exact JSON, when set
	}{
		{"get own", "GET", "/api/conversations/" + convA, "", 200, ""},
		{"get own upper-case", "GET", "/api/conversations/" + strings.ToUpper(convA), "", 200, ""},
		{"get other", "GET", "/api/conversations/" + convB, "", 403, ""},
		{"get unknown outside scope", "GET", "/api/conversations/" + core.NewID(), "", 403, ""},
		{"delete other", "DELETE", "/api/conversations/" + convB, "", 403, ""},
		{"events of other", "GET", "/api/conversations/" + convB + "/events/search", "", 403, ""},
		{"count events of other", "GET", "/api/conversations/" + convB + "/events/count", "", 403, ""},
		{"post to other", "POST", "/api/conversations/" + convB + "/events", `{"role":"user","content":"x"}`, 403, ""},
		{"post to own", "POST", "/api/conversations/" + convA + "/events", `{"role":"user","content":"x"}`, 200, `{"success":true}`},
		{"create other", "POST", "/api/conversations", `{"conversation_id":"` + convB + `"}`, 403, ""},
		{"create without id", "POST", "/api/conversations", `{}`, 403, ""},
		{"create own existing", "POST", "/api/conversations", `{"conversation_id":"` + convA + `"}`, 200, ""},
		{"count", "GET", "/api/conversations/count", "", 200, `1`},
		{"page_id of other", "GET", "/api/conversations/search?page_id=" + convB, "", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := api.do(tt.method, tt.path, keyScoped, tt.body).mustStatus(t, tt.wantStatus)
			if tt.wantStatus == 403 && r.detail(t) == "" {
				t.Errorf("empty detail")
			}
			if tt.wantBody != "" && string(r.body) != tt.wantBody {
				t.Errorf("body = %s, want %s", r.body, tt.wantBody)
			}
		})
	}
	t.Run("search lists only scoped", func(t *testing.T) {
		page := decode[searchPage](t, api.do("GET", "/api/conversations/search", keyScoped, "").mustStatus(t, 200))
		if len(page.Items) != 1 || page.Items[0].ID != convA || page.NextPageID != nil {
			t.Errorf("items = %+v, next = %v; want only %s", page.Items, page.NextPageID, convA)
		}
	})
	t.Run("batch nulls out of scope", func(t *testing.T) {
		list := decode[[]*core.ConversationInfo](t, api.do("GET", "/api/conversations?ids="+convB+","+convA, keyScoped, "").mustStatus(t, 200))
		if len(list) != 2 || list[0] != nil || list[1] == nil || list[1].ID != convA {
			t.Errorf("list = %+v, want [null, %s]", list, convA)
		}
	})
	if _, err := api.backend.store.Conversation(context.Background(), convB); err != nil {
		t.Errorf("a forbidden DELETE removed the conversation: %v", err)
	}
}

func TestCreateConversation(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantDetail string // substring
		check      func(t *testing.T, api *testAPI, c *core.ConversationInfo)
	}{
		{
			name: "new with fields as given",
			body: `{"conversation_id":"` + convA + `","agent":{"kind":"Agent","llm":{"model":"m","temperature":0.5,"api_key":"sk-1"}},"workspace":{"working_dir":"/w"},` +
				`"confirmation_policy":{"kind":"ConfirmRisky"},"secrets":{"X":"y"},"max_iterations":7,"plugins":[{"source":"p"}]}`,
			wantStatus: 201,
			check: func(t *testing.T, api *testAPI, c *core.ConversationInfo) {
				if c.ID != convA || c.ExecutionStatus != core.StatusIdle || c.CreatedAt.IsZero() || !c.CreatedAt.Equal(c.UpdatedAt) || c.MaxIterations != 7 {
					t.Errorf("conversation = %+v", c)
				}
				if got := string(c.Agent); got != `{"kind":"Agent","llm":{"api_key":null,"model":"m","temperature":0.5}}` {
					t.Errorf("agent = %s, want the api_key null", got)
				}
				if got := string(c.Workspace); got != `{"kind":"LocalWorkspace","working_dir":"/w"}` {
					t.Errorf("workspace = %s", got)
				}
				if got := string(c.ConfirmationPolicy); got != `{"threshold":"HIGH","confirm_unknown":true,"kind":"ConfirmRisky"}` {
					t.Errorf("confirmation_policy = %s, want upstream's defaults filled in", got)
				}
				if got := string(c.SecretRegistry); got != `{"secret_sources":{"X":{"description":null,"kind":"StaticSecret","value":null}}}` {
					t.Errorf("secret_registry = %s", got)
				}
				stored, _ := api.backend.store.Conversation(context.Background(), convA)
				if stored.Secrets["X"].Value != "y" || !bytes.Contains(stored.Agent, []byte(`"sk-1"`)) || string(stored.Launch) != `{"plugins":[{"source":"p"}]}` {
					t.Errorf("stored = %+v, want the secret, the api key and the launch fields kept", stored)
				}
			},
		},
		{
			name:       "no id gets a new UUID",
			body:       `{"agent":null}`,
			wantStatus: 201,
			check: func(t *testing.T, api *testAPI, c *core.ConversationInfo) {
				if _, err := core.NormalizeID(c.ID); err != nil || string(c.Agent) != "null" || c.MaxIterations != 500 || !c.StuckDetection ||
					string(c.ConfirmationPolicy) != `{"kind":"NeverConfirm"}` || c.PersistenceDir != "workspace/conversations/"+strings.ReplaceAll(c.ID, "-", "") {
					t.Errorf("conversation = %+v, want upstream's defaults", c)
				}
			},
		},
		{
			name:       "hex id is normalized",
			body:       `{"conversation_id":"` + strings.ReplaceAll(strings.ToUpper(convB), "-", "") + `"}`,
			wantStatus: 201,
			check: func(t *testing.T, api *testAPI, c *core.ConversationInfo) {
				if c.ID != convB {
					t.Errorf("id = %q, want %q", c.ID, convB)
				}
			},
		},
		{
			name:       "initial message as string",
			body:       `{"conversation_id":"` + convC + `","initial_message":{"role":"user","content":"hello","run":false}}`,
			wantStatus: 201,
			check: func(t *testing.T, api *testAPI, c *core.ConversationInfo) {
				events, _ := api.backend.store.Events(context.Background(), c.ID, 0, 0)
				if len(events) != 1 || events[0].Source != core.SourceUser || events[0].Kind != core.KindMessage ||
					!bytes.Contains(events[0].Raw, []byte(`"llm_message":{"role":"user","content":[{"type":"text","text":"hello"}]}`)) {
					t.Errorf("events = %+v", events)
				}
			},
		},
		{"bad id", `{"conversation_id":"nope"}`, 400, "conversation_id is not a UUID", nil},
		{"bad policy", `{"confirmation_policy":{"kind":"Sometimes"}}`, 400, "confirmation_policy: kind must be", nil},
		{"bad analyzer", `{"security_analyzer":{"kind":"Nope"}}`, 400, "security_analyzer: kind must be one of", nil},
		{"bad tags", `{"tags":{"Bad":"x"}}`, 400, `tag name "Bad"`, nil},
		{"bad max_iterations", `{"max_iterations":0}`, 400, "max_iterations: must be at least 1", nil},
		{"redacted secret", `{"secrets":{"X":"**********"}}`, 400, "secrets.X: the value is empty or redacted", nil},
		{"workspace without dir", `{"workspace":{"kind":"LocalWorkspace"}}`, 400, `workspace: needs "working_dir"`, nil},
		{"id wrong type", `{"conversation_id":5}`, 400, `field "conversation_id" has the wrong type`, nil},
		{"not JSON", `{"conversation_id":`, 400, "not valid JSON", nil},
		{"array body", `[1,2]`, 400, "must be a JSON object", nil},
		{"empty body", ``, 400, "request body is required", nil},
		{"initial message wrong role", `{"initial_message":{"role":"assistant","content":"x"}}`, 400, `initial_message: role "assistant"`, nil},
		{"initial message no content", `{"initial_message":{"role":"user"}}`, 400, `initial_message: "content" is required`, nil},
		{"initial message bad part", `{"initial_message":{"role":"user","content":[{"type":"video"}]}}`, 400, "initial_message: content part 0", nil},
		{"too large", `{"agent":"` + strings.Repeat("x", testMaxBody) + `"}`, 413, "larger than", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newTestAPI(t)
			r := api.do("POST", "/api/conversations", keyAll, tt.body).mustStatus(t, tt.wantStatus)
			if tt.wantDetail != "" {
				if got := r.detail(t); !strings.Contains(got, tt.wantDetail) {
					t.Errorf("detail = %q, want it to contain %q", got, tt.wantDetail)
				}
				if n := api.do("GET", "/api/conversations/count", keyAll, "").body; string(n) != "0" {
					t.Errorf("a refused create left %s conversations", n)
				}
			}
			if tt.check != nil {
				tt.check(t, api, decode[*core.ConversationInfo](t, r))
			}
		})
	}
}

func TestCreateExistingConversation(t *testing.T) {
	api := newTestAPI(t)
	first := api.do("POST", "/api/conversations", keyAll, `{"conversation_id":"`+convA+`","agent":{"v":1}}`).mustStatus(t, 201)
	again := api.do("POST", "/api/conversations", keyAll, `{"conversation_id":"`+convA+`","agent":{"v":2},"initial_message":{"role":"user","content":"x"}}`).mustStatus(t, 200)
	if !bytes.Equal(first.body, again.body) {
		t.Errorf("existing conversation changed:\n got %s\nwant %s", again.body, first.body)
	}
	if n := api.do("GET", "/api/conversations/"+convA+"/events/count", keyAll, "").body; string(n) != "0" {
		t.Errorf("initial_message of an existing conversation was posted: %s events", n)
	}
	api.setStatus(convA, core.StatusDeleting)
	r := api.do("POST", "/api/conversations", keyAll, `{"conversation_id":"`+convA+`"}`).mustStatus(t, 409)
	if d := r.detail(t); d != "Conversation is being deleted" {
		t.Errorf("detail = %q", d)
	}
}

func TestGetAndDeleteConversation(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	api.post(convA, "x")
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantBody           string
	}{
		{"get", "GET", "/api/conversations/" + convA, 200, ""},
		{"get trailing path is another route", "GET", "/api/conversations/" + convA + "/", 404, `{"detail":"Not Found"}`},
		{"get unknown", "GET", "/api/conversations/" + convB, 404, `{"detail":"Conversation not found"}`},
		{"get malformed", "GET", "/api/conversations/123", 400, `{"detail":"conversation id is not a UUID"}`},
		{"delete malformed", "DELETE", "/api/conversations/123", 400, ""},
		{"delete unknown", "DELETE", "/api/conversations/" + convB, 404, `{"detail":"Conversation not found"}`},
		{"delete", "DELETE", "/api/conversations/" + convA, 200, `{"success":true}`},
		{"get deleted", "GET", "/api/conversations/" + convA, 404, ""},
		{"events of deleted", "GET", "/api/conversations/" + convA + "/events/search", 404, ""},
		{"delete again", "DELETE", "/api/conversations/" + convA, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := api.do(tt.method, tt.path, keyAll, "").mustStatus(t, tt.wantStatus)
			if tt.wantBody != "" && string(r.body) != tt.wantBody {
				t.Errorf("body = %s, want %s", r.body, tt.wantBody)
			}
			if tt.wantStatus == 200 && tt.method == "GET" {
				if c := decode[core.Conversation](t, r); c.ID != convA {
					t.Errorf("id = %q", c.ID)
				}
			}
		})
	}
}

func TestBatchConversations(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	api.create(convC)
	many := strings.TrimSuffix(strings.Repeat(convA+",", maxBatchIDs+1), ",")
	tests := []struct {
		name       string
		query      string
		wantStatus int
		want       []string // "" for null
	}{
		{"repeated", "ids=" + convA + "&ids=" + convB + "&ids=" + convC, 200, []string{convA, "", convC}},
		{"comma separated", "ids=" + convC + "," + convB, 200, []string{convC, ""}},
		{"encoded comma and spaces", "ids=" + convA + "%2C%20" + convC, 200, []string{convA, convC}},
		{"upper hex", "ids=" + strings.ReplaceAll(strings.ToUpper(convA), "-", ""), 200, []string{convA}},
		{"duplicates kept", "ids=" + convA + "," + convA, 200, []string{convA, convA}},
		{"missing", "", 400, nil},
		{"empty", "ids=", 400, nil},
		{"malformed", "ids=" + convA + ",bad", 400, nil},
		{"too many", "ids=" + many, 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := api.do("GET", "/api/conversations?"+tt.query, keyAll, "").mustStatus(t, tt.wantStatus)
			if tt.wantStatus != 200 {
				r.detail(t)
				return
			}
			list := decode[[]*core.Conversation](t, r)
			var got []string
			for _, c := range list {
				if c == nil {
					got = append(got, "")
				} else {
					got = append(got, c.ID)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ids = %q, want %q", got, tt.want)
			}
		})
	}
	r := api.do("GET", "/api/conversations/?ids="+convA, keyAll, "").mustStatus(t, 200)
	if list := decode[[]*core.Conversation](t, r); len(list) != 1 || list[0] == nil {
		t.Errorf("trailing slash: list = %s", r.body)
	}
	if !bytes.Contains(api.do("GET", "/api/conversations?ids="+convB, keyAll, "").body, []byte("[null]")) {
		t.Errorf("unknown id is not null")
	}
}

// seedConversations creates n conversations whose created_at pairs tie,
// broken by IDs that grow with creation, and whose updated_at runs the other
// way. It returns their IDs in creation order.
func seedConversations(t *testing.T, api *testAPI, n int) []string {
	t.Helper()
	ctx := context.Background()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		api.create(ids[i])
		c, _ := api.backend.store.Conversation(ctx, ids[i])
		c.CreatedAt = base.Add(time.Duration(i/2) * time.Minute) // pairs tie on created_at
		c.UpdatedAt = base.Add(time.Duration(n-i) * time.Hour)
		if i%3 == 0 {
			c.ExecutionStatus = core.StatusRunning
		}
		if err := api.backend.store.UpdateConversation(ctx, c, 0); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// walk follows next_page_id from the first page to the last and returns
// every item's ID in order, checking each page's size.
func walk(t *testing.T, api *testAPI, path, query string, limit int) []string {
	t.Helper()
	var got []string
	pageID := ""
	for pages := 0; ; pages++ {
		if pages > 200 {
			t.Fatalf("paging %s does not end", path)
		}
		q := fmt.Sprintf("%s&limit=%d", query, limit)
		if pageID != "" {
			q += "&page_id=" + url.QueryEscape(pageID)
		}
		r := api.do("GET", path+"?"+q, keyAll, "").mustStatus(t, 200)
		var page struct {
			Items      []json.RawMessage `json:"items"`
			NextPageID *string           `json:"next_page_id"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil || page.Items == nil {
			t.Fatalf("page %s: %v", r.body, err)
		}
		if len(page.Items) > limit || (page.NextPageID != nil && len(page.Items) != limit) {
			t.Fatalf("page of %d items with limit %d and next %v", len(page.Items), limit, page.NextPageID)
		}
		for _, it := range page.Items {
			var v struct{ ID string }
			if err := json.Unmarshal(it, &v); err != nil {
				t.Fatal(err)
			}
			got = append(got, v.ID)
		}
		if page.NextPageID == nil {
			return got
		}
		if *page.NextPageID == "" {
			t.Fatalf("next_page_id is \"\", want null or an id")
		}
		pageID = *page.NextPageID
	}
}

func TestSearchConversations(t *testing.T) {
	api := newTestAPI(t)
	ids := seedConversations(t, api, 7)
	rev := slices.Clone(ids)
	slices.Reverse(rev)
	running := []string{ids[0], ids[3], ids[6]}
	tests := []struct {
		order string
		query string
		want  []string
	}{
		{"", "", ids},
		{"CREATED_AT", "", ids},
		{"CREATED_AT_DESC", "", rev},
		{"UPDATED_AT", "", rev},
		{"UPDATED_AT_DESC", "", ids},
		{"updated_at_desc", "", ids},
		{"CREATED_AT", "&execution_status=running", running},
	}
	for _, tt := range tests {
		want := tt.want
		for _, limit := range []int{1, 2, 3, 7, 100} {
			t.Run(fmt.Sprintf("%s%s/limit=%d", tt.order, tt.query, limit), func(t *testing.T) {
				got := walk(t, api, "/api/conversations/search", "sort_order="+tt.order+tt.query, limit)
				if !slices.Equal(got, want) {
					t.Errorf("ids =\n %v\nwant\n %v", got, want)
				}
			})
		}
	}
	counts := []struct {
		query, want string
	}{
		{"", "7"},
		{"?execution_status=running", "3"},
		{"?execution_status=finished", "0"},
	}
	for _, c := range counts {
		if r := api.do("GET", "/api/conversations/count"+c.query, keyAll, "").mustStatus(t, 200); string(r.body) != c.want {
			t.Errorf("count%s = %s, want %s", c.query, r.body, c.want)
		}
	}
}

func TestSearchConversationsEmpty(t *testing.T) {
	api := newTestAPI(t)
	r := api.do("GET", "/api/conversations/search", keyAll, "").mustStatus(t, 200)
	if string(r.body) != `{"items":[],"next_page_id":null}` {
		t.Errorf("body = %s", r.body)
	}
	if r := api.do("GET", "/api/conversations/count", keyAll, "").mustStatus(t, 200); string(r.body) != "0" {
		t.Errorf("count = %s", r.body)
	}
}

func TestSearchBadQueries(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	api.post(convA, "x")
	conv := "/api/conversations/search?"
	events := "/api/conversations/" + convA + "/events/search?"
	count := "/api/conversations/" + convA + "/events/count?"
	tests := []struct {
		path, wantDetail string
	}{
		{conv + "limit=0", "limit must be an integer from 1 to 100"},
		{conv + "limit=101", "limit must be an integer from 1 to 100"},
		{conv + "limit=abc", "limit must be"},
		{conv + "sort_order=TIMESTAMP", "sort_order must be one of CREATED_AT"},
		{conv + "page_id=nope", "page_id is not a conversation id"},
		{conv + "page_id=" + convB, "page_id does not name a conversation"},
		{conv + "execution_status=asleep", "execution_status must be one of"},
		{"/api/conversations/count?execution_status=asleep", "execution_status must be one of"},
		{events + "limit=-5", "limit must be"},
		{events + "limit=1000", "limit must be"},
		{events + "sort_order=CREATED_AT", "sort_order must be one of TIMESTAMP, TIMESTAMP_DESC"},
		{events + "source=robot", "source must be one of"},
		{events + "timestamp__gte=yesterday", "timestamp__gte is not an ISO 8601 timestamp"},
		{events + "timestamp__lt=2025-13-01", "timestamp__lt is not"},
		{events + "page_id=" + core.NewID(), "page_id does not name an event of this conversation"},
		{count + "source=robot", "source must be one of"},
		{count + "timestamp__lt=soon", "timestamp__lt is not"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := api.do("GET", tt.path, keyAll, "").mustStatus(t, 400)
			if got := r.detail(t); !strings.Contains(got, tt.wantDetail) {
				t.Errorf("detail = %q, want it to contain %q", got, tt.wantDetail)
			}
		})
	}
}

// seedEvents posts n events alternating user messages and agent actions;
// with a zero step they share timestamps in pairs. It returns the log.
func seedEvents(t *testing.T, api *testAPI, id string, n int) []*core.Event {
	t.Helper()
	for i := range n {
		api.backend.mu.Lock()
		api.backend.step = time.Second * time.Duration(i%2) // pairs share a timestamp
		api.backend.mu.Unlock()
		if i%2 == 0 {
			api.post(id, fmt.Sprintf("m%d", i))
			continue
		}
		body := fmt.Sprintf(`{"source":"agent","kind":"ActionEvent","thought":[{"type":"text","text":"t%d"}],"action":{"kind":"FinishAction","message":"m"},`+
			`"tool_name":"finish","tool_call_id":"c%d","tool_call":{"id":"c%d","name":"finish","arguments":"{}","origin":"completion"},"llm_response_id":"r"}`, i, i, i)
		api.do("POST", "/api/conversations/"+id+"/events", keyRuntime, body).mustStatus(t, 200)
	}
	events, err := api.backend.store.Events(context.Background(), id, 0, 0)
	if err != nil || len(events) != n {
		t.Fatalf("seeded %d events, %v", len(events), err)
	}
	return events
}

func idsOf(events []*core.Event, keep func(*core.Event) bool) []string {
	var out []string
	for _, e := range events {
		if keep == nil || keep(e) {
			out = append(out, e.ID)
		}
	}
	return out
}

func TestSearchEvents(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	api.create(convB)
	log := seedEvents(t, api, convA, 11)
	seedEvents(t, api, convB, 3)
	reversed := slices.Clone(log)
	slices.Reverse(reversed)
	mid := log[4].Timestamp
	ts := url.QueryEscape(mid.Format(time.RFC3339Nano))
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"default order", "", idsOf(log, nil)},
		{"asc", "sort_order=TIMESTAMP", idsOf(log, nil)},
		{"desc", "sort_order=TIMESTAMP_DESC", idsOf(reversed, nil)},
		{"kind", "kind=MessageEvent", idsOf(log, func(e *core.Event) bool { return e.Kind == core.KindMessage })},
		{"source desc", "source=agent&sort_order=timestamp_desc", idsOf(reversed, func(e *core.Event) bool { return e.Source == core.SourceAgent })},
		{"gte", "timestamp__gte=" + ts, idsOf(log, func(e *core.Event) bool { return !e.Timestamp.Before(mid) })},
		{"lt", "timestamp__lt=" + ts, idsOf(log, func(e *core.Event) bool { return e.Timestamp.Before(mid) })},
		{"naive timestamp is UTC", "timestamp__gte=" + mid.Format("2006-01-02T15:04:05.999999"), idsOf(log, func(e *core.Event) bool { return !e.Timestamp.Before(mid) })},
		{"unencoded plus offset", "timestamp__gte=" + mid.In(time.FixedZone("", 3600)).Format(time.RFC3339Nano), idsOf(log, func(e *core.Event) bool { return !e.Timestamp.Before(mid) })},
		{"window with kind", "kind=ActionEvent&timestamp__gte=" + ts + "&timestamp__lt=" + url.QueryEscape(log[9].Timestamp.Format(time.RFC3339Nano)),
			idsOf(log, func(e *core.Event) bool {
				return e.Kind == "ActionEvent" && !e.Timestamp.Before(mid) && e.Timestamp.Before(log[9].Timestamp)
			})},
		{"no match", "kind=NopeEvent", nil},
	}
	for _, tt := range tests {
		for _, limit := range []int{1, 2, 3, 5, 11, 100} {
			t.Run(fmt.Sprintf("%s/limit=%d", tt.name, limit), func(t *testing.T) {
				got := walk(t, api, "/api/conversations/"+convA+"/events/search", tt.query, limit)
				if !slices.Equal(got, tt.want) {
					t.Errorf("ids =\n %v\nwant\n %v", got, tt.want)
				}
			})
		}
		t.Run(tt.name+"/count", func(t *testing.T) {
			r := api.do("GET", "/api/conversations/"+convA+"/events/count?"+tt.query, keyAll, "").mustStatus(t, 200)
			if want := fmt.Sprint(len(tt.want)); string(r.body) != want {
				t.Errorf("count = %s, want %s", r.body, want)
			}
		})
	}
}

func TestSearchEventsWritesRawBytes(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	log := seedEvents(t, api, convA, 4)
	r := api.do("GET", "/api/conversations/"+convA+"/events/search?limit=3", keyAll, "").mustStatus(t, 200)
	want := fmt.Sprintf(`{"items":[%s,%s,%s],"next_page_id":%q}`, log[0].Raw, log[1].Raw, log[2].Raw, log[3].ID)
	if string(r.body) != want {
		t.Errorf("body =\n %s\nwant\n %s", r.body, want)
	}
	r = api.do("GET", "/api/conversations/"+convA+"/events/search?page_id="+log[3].ID, keyAll, "").mustStatus(t, 200)
	if want := fmt.Sprintf(`{"items":[%s],"next_page_id":null}`, log[3].Raw); string(r.body) != want {
		t.Errorf("last page =\n %s\nwant\n %s", r.body, want)
	}
	r = api.do("GET", "/api/conversations/"+convA+"/events/"+log[1].ID, keyAll, "").mustStatus(t, 200)
	if !bytes.Equal(r.body, log[1].Raw) {
		t.Errorf("event = %s, want %s", r.body, log[1].Raw)
	}
}

// TestSearchEventsCursorFilteredOut pages with a filter from a page_id the
// filter drops: the page starts at the cursor's successor.
func TestSearchEventsCursorFilteredOut(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	log := seedEvents(t, api, convA, 6) // user, agent, user, agent, ...
	r := api.do("GET", "/api/conversations/"+convA+"/events/search?kind=MessageEvent&page_id="+log[1].ID, keyAll, "").mustStatus(t, 200)
	var page struct{ Items []struct{ ID string } }
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 2 || page.Items[0].ID != log[2].ID || page.Items[1].ID != log[4].ID {
		t.Errorf("items = %+v, want %s, %s", page.Items, log[2].ID, log[4].ID)
	}
}

func TestEventsUnknownConversation(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	log := seedEvents(t, api, convA, 1)
	tests := []struct {
		name, method, path, body, wantDetail string
	}{
		{"search", "GET", "/api/conversations/" + convB + "/events/search", "", "Conversation not found"},
		{"count", "GET", "/api/conversations/" + convB + "/events/count", "", "Conversation not found"},
		{"event of unknown conversation", "GET", "/api/conversations/" + convB + "/events/" + log[0].ID, "", "Conversation not found"},
		{"unknown event", "GET", "/api/conversations/" + convA + "/events/" + core.NewID(), "", "Event not found"},
		{"post", "POST", "/api/conversations/" + convB + "/events", `{"role":"user","content":"x"}`, "Conversation not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := api.do(tt.method, tt.path, keyAll, tt.body).mustStatus(t, 404)
			if got := r.detail(t); got != tt.wantDetail {
				t.Errorf("detail = %q, want %q", got, tt.wantDetail)
			}
		})
	}
}

// actionFields are an ActionEvent's required fields.
const actionFields = `"thought":[{"type":"text","text":"t"}],"tool_name":"bash","tool_call_id":"c1",` +
	`"tool_call":{"id":"c1","name":"bash","arguments":"{}","origin":"completion"},"llm_response_id":"r1"`

func TestPostEvent(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantDetail string   // substring, for errors
		wantSource string   // for success
		wantKind   string   // for success
		wantRaw    []string // substrings of the stored event
	}{
		{"user string", `{"role":"user","content":"hi","run":false}`, 200, "", "user", "MessageEvent",
			[]string{`"llm_message":{"role":"user","content":[{"type":"text","text":"hi"}]}`, `"activated_skills":[]`}},
		{"user parts", `{"role":"user","content":[{"type":"text","text":"a"},{"type":"image","image_urls":["http://i/1.png"]}]}`, 200, "", "user", "MessageEvent",
			[]string{`{"type":"image","image_urls":["http://i/1.png"]}`}},
		{"agent event", `{"source":"agent","kind":"ActionEvent",` + actionFields + `,"action":{"kind":"TerminalAction","command":"ls"}}`, 200, "", "agent", "ActionEvent",
			[]string{`"tool_name":"bash"`, `"action":{"kind":"TerminalAction","command":"ls"}`}},
		{"environment event", `{"kind":"ObservationEvent","tool_name":"bash","tool_call_id":"c1","action_id":"a1","observation":{"kind":"TerminalObservation","content":[]}}`, 200, "", "environment", "ObservationEvent",
			[]string{`"observation":{"kind":"TerminalObservation","content":[]}`}},
		{"default source", `{"kind":"AgentErrorEvent","tool_name":"bash","tool_call_id":"c1","error":"boom"}`, 200, "", "agent", "AgentErrorEvent", nil},
		{"user pause event", `{"kind":"PauseEvent"}`, 200, "", "user", "PauseEvent", nil},
		{"assistant role", `{"role":"assistant","content":"x"}`, 400, `role "assistant" is not accepted`, "", "", nil},
		{"no content", `{"role":"user"}`, 400, `"content" is required`, "", "", nil},
		{"content number", `{"role":"user","content":5}`, 400, `"content" must be a string or a list of parts`, "", "", nil},
		{"message without llm_message", `{"source":"agent","kind":"MessageEvent"}`, 400, `MessageEvent needs the field "llm_message"`, "", "", nil},
		{"message without source", `{"kind":"MessageEvent","llm_message":{"role":"assistant"}}`, 400, `"source" is required`, "", "", nil},
		{"message bad role", `{"source":"agent","kind":"MessageEvent","llm_message":{"role":"robot"}}`, 400, `llm_message needs "role"`, "", "", nil},
		{"action missing fields", `{"source":"agent","kind":"ActionEvent"}`, 400, `ActionEvent needs the field "llm_response_id"`, "", "", nil},
		{"action wrong type", `{"source":"agent","kind":"ActionEvent",` + strings.Replace(actionFields, `"tool_name":"bash"`, `"tool_name":5`, 1) + `}`, 400, `field "tool_name" must be a string`, "", "", nil},
		{"action without tool_call id", `{"source":"agent","kind":"ActionEvent",` + strings.Replace(actionFields, `"id":"c1",`, ``, 1) + `}`, 400, `tool_call needs "id"`, "", "", nil},
		{"extra field", `{"source":"agent","kind":"PauseEvent","seq":5}`, 400, `PauseEvent has no field "seq"`, "", "", nil},
		{"event with id", `{"id":"x","source":"agent","kind":"PauseEvent"}`, 400, `"id" is assigned by the server`, "", "", nil},
		{"event with timestamp", `{"timestamp":"2025-01-01T00:00:00Z","kind":"PauseEvent"}`, 400, `"timestamp" is assigned by the server`, "", "", nil},
		{"unknown kind", `{"source":"agent","kind":"HookEvent"}`, 400, `kind "HookEvent" is not an OpenHands event kind`, "", "", nil},
		{"event no kind", `{"source":"agent"}`, 400, `the event needs "kind"`, "", "", nil},
		{"event bad source", `{"source":"robot","kind":"PauseEvent"}`, 400, `"source" must be one of`, "", "", nil},
		{"full_state from a runtime", `{"kind":"ConversationStateUpdateEvent","key":"full_state","value":{}}`, 400, `state key "full_state" is not the runtime's to set`, "", "", nil},
		{"bad status", `{"kind":"ConversationStateUpdateEvent","key":"execution_status","value":"done"}`, 400, `execution_status "done" is not one of`, "", "", nil},
		{"neither", `{"content":"x"}`, 400, `the event needs "kind"`, "", "", nil},
		{"auth frame", `{"type":"auth","session_api_key":"x"}`, 400, `the event needs "kind"`, "", "", nil},
		{"array", `["x"]`, 400, "must be a JSON object", "", "", nil},
		{"null", `null`, 400, "must be a JSON object", "", "", nil},
		{"not JSON", `{"role":`, 400, "not valid JSON", "", "", nil},
		{"empty", ``, 400, "request body is required", "", "", nil},
		{"too large", `{"role":"user","content":"` + strings.Repeat("y", testMaxBody) + `"}`, 413, "larger than 4096 bytes", "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newTestAPI(t)
			api.create(convA)
			key := keyAll
			var obj map[string]json.RawMessage
			if json.Unmarshal([]byte(tt.body), &obj) == nil && obj != nil && obj["role"] == nil {
				// An event object: a client is refused whatever it holds,
				// a runtime gets it checked.
				r := api.do("POST", "/api/conversations/"+convA+"/events", keyAll, tt.body).mustStatus(t, 403)
				if !strings.Contains(r.detail(t), "only an agent runtime may post") {
					t.Errorf("client's post: %s", r.body)
				}
				key = keyRuntime
			}
			r := api.do("POST", "/api/conversations/"+convA+"/events", key, tt.body).mustStatus(t, tt.wantStatus)
			events, _ := api.backend.store.Events(context.Background(), convA, 0, 0)
			if tt.wantStatus != 200 {
				if got := r.detail(t); !strings.Contains(got, tt.wantDetail) {
					t.Errorf("detail = %q, want it to contain %q", got, tt.wantDetail)
				}
				if len(events) != 0 {
					t.Errorf("a refused post appended %d events", len(events))
				}
				return
			}
			if string(r.body) != `{"success":true}` {
				t.Errorf("body = %s", r.body)
			}
			if len(events) != 1 || string(events[0].Source) != tt.wantSource || events[0].Kind != tt.wantKind {
				t.Fatalf("events = %+v", events)
			}
			for _, s := range tt.wantRaw {
				if !bytes.Contains(events[0].Raw, []byte(s)) {
					t.Errorf("raw %s lacks %s", events[0].Raw, s)
				}
			}
		})
	}
}

func TestPostEventBackendFailures(t *testing.T) {
	tests := []struct {
		name       string
		postErr    error
		status     core.ExecutionStatus
		wantStatus int
		wantDetail string
	}{
		{"deleting", nil, core.StatusDeleting, 409, "Conversation is being deleted"},
		{"gone meanwhile", fmt.Errorf("conversation: %w", core.ErrNotFound), "", 404, "Conversation not found"},
		{"timeout", fmt.Errorf("ask actor: %w", context.DeadlineExceeded), "", 503, "Service temporarily unavailable"},
		{"shutting down", fmt.Errorf("post event: %w", actors.ErrShutdown), "", 503, "Service temporarily unavailable"},
		{"broken", errors.New("disk on fire"), "", 500, "Internal server error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newTestAPI(t)
			api.create(convA)
			if tt.status != "" {
				api.setStatus(convA, tt.status)
			}
			api.backend.postErr = tt.postErr
			r := api.do("POST", "/api/conversations/"+convA+"/events", keyAll, `{"role":"user","content":"x"}`).mustStatus(t, tt.wantStatus)
			if got := r.detail(t); got != tt.wantDetail {
				t.Errorf("detail = %q, want %q", got, tt.wantDetail)
			}
			if strings.Contains(string(r.body), "disk on fire") {
				t.Errorf("internal error leaked: %s", r.body)
			}
			if tt.wantStatus >= 500 && !strings.Contains(api.logs.String(), "rest request failed") {
				t.Errorf("server failure not logged")
			}
		})
	}
}

func TestUnknownRoutes(t *testing.T) {
	api := newTestAPI(t)
	tests := []struct {
		method, path string
		wantStatus   int
		wantAllow    string
	}{
		{"GET", "/api/nothing", 404, ""},
		{"GET", "/api/conversations/" + convA + "/events", 405, "POST"},
		{"PUT", "/api/conversations/" + convA, 405, "GET, PATCH, DELETE"},
		{"PATCH", "/api/conversations", 405, "GET, POST"},
		{"POST", "/api/conversations/search", 405, "GET, PATCH, DELETE"}, // PATCH and DELETE are {conversation_id}
		{"GET", "/api/conversations/" + convA + "/events/a/b", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := api.do(tt.method, tt.path, keyAll, "").mustStatus(t, tt.wantStatus)
			r.detail(t)
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

// TestKeyNeverInResponse sends the key in the header and the query of
// every kind of request, successful or not, and checks that no response
// body or header and no log line contains it.
func TestKeyNeverInResponse(t *testing.T) {
	api := newTestAPI(t)
	api.create(convA)
	log := seedEvents(t, api, convA, 2)
	q := "session_api_key=" + url.QueryEscape(keyAll)
	requests := []struct{ method, path, body string }{
		{"POST", "/api/conversations?" + q, `{"conversation_id":"` + convB + `","agent":{"k":1}}`},
		{"POST", "/api/conversations?" + q, `{"conversation_id":"` + keyAll + `"}`},
		{"POST", "/api/conversations?" + q, `{"conversation_id":`},
		{"GET", "/api/conversations/search?" + q + "&limit=" + url.QueryEscape(keyAll), ""},
		{"GET", "/api/conversations/search?" + q + "&page_id=" + url.QueryEscape(keyAll), ""},
		{"GET", "/api/conversations/search?" + q + "&sort_order=" + url.QueryEscape(keyAll), ""},
		{"GET", "/api/conversations/count?" + q, ""},
		{"GET", "/api/conversations?" + q + "&ids=" + url.QueryEscape(keyAll), ""},
		{"GET", "/api/conversations/" + url.PathEscape(keyAll) + "?" + q, ""},
		{"GET", "/api/conversations/" + convA + "?" + q, ""},
		{"GET", "/api/conversations/" + convA + "/events/search?" + q + "&kind=" + url.QueryEscape(keyAll) + "&source=" + url.QueryEscape(keyAll), ""},
		{"GET", "/api/conversations/" + convA + "/events/search?" + q + "&timestamp__gte=" + url.QueryEscape(keyAll), ""},
		{"GET", "/api/conversations/" + convA + "/events/count?" + q, ""},
		{"GET", "/api/conversations/" + convA + "/events/" + log[0].ID + "?" + q, ""},
		{"GET", "/api/conversations/" + convA + "/events/" + url.PathEscape(keyAll) + "?" + q, ""},
		{"POST", "/api/conversations/" + convA + "/events?" + q, `{"role":"user","content":"x"}`},
		{"POST", "/api/conversations/" + convA + "/events?" + q, `{"role":"` + keyAll + `"}`},
		{"DELETE", "/api/conversations/" + convB + "?" + q, ""},
		{"PUT", "/api/conversations/" + convA + "?" + q, ""},
		{"GET", "/api/nothing?" + q, ""},
	}
	for _, key := range []string{keyAll, keyError, "wrong-" + keyAll} {
		for _, rq := range requests {
			r := api.do(rq.method, strings.ReplaceAll(rq.path, url.QueryEscape(keyAll), url.QueryEscape(key)), key, rq.body)
			if bytes.Contains(r.body, []byte(key)) {
				t.Errorf("%s %s: body contains the key: %s", rq.method, rq.path, r.body)
			}
			for name, vs := range r.header {
				for _, v := range vs {
					if strings.Contains(v, key) {
						t.Errorf("%s %s: header %s contains the key", rq.method, rq.path, name)
					}
				}
			}
		}
	}
	if logs := api.logs.String(); strings.Contains(logs, keyAll) || strings.Contains(logs, url.QueryEscape(keyAll)) {
		t.Errorf("log contains the key:\n%s", logs)
	}
}

// headerKey is an in-test authenticator: X-Session-API-Key must equal key.
type headerKey struct{ key string }

func (h headerKey) Name() string { return "header" }

func (h headerKey) Authenticate(_ context.Context, req *core.Request) core.Result {
	switch got := req.Header.Get("X-Session-API-Key"); got {
	case "":
		return core.Abstained()
	case h.key:
		return core.Allowed(&core.Principal{Subject: "test", Roles: []string{core.RoleRuntime}})
	}
	return core.Denied("wrong key")
}

type staticChains struct{ chain *core.Chain }

func (c staticChains) Chain(core.Route) *core.Chain { return c.chain }

// TestRESTOverActorSystem runs the REST API as the server mounts it, over the
// real actor system: what goes in through the conversation actor comes back
// out of the store, limits come from the config and the access log holds no
// key.
func TestRESTOverActorSystem(t *testing.T) {
	chain, err := core.NewChain(core.RouteREST, headerKey{keyAll})
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New()
	sys, err := actors.New(actors.Options{Store: st, Chains: staticChains{chain}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Shutdown(context.Background()) })
	cfg := config.Default()
	cfg.Limits.MaxBodyBytes = testMaxBody
	access := &syncBuffer{}
	edge, err := New(Options{Config: cfg, Actors: sys, Store: st, AccessLog: slog.New(slog.NewTextHandler(access, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(edge.Handler())
	t.Cleanup(srv.Close)
	api := &testAPI{t: t, srv: srv}

	api.do("GET", "/api/conversations/count", "", "").mustStatus(t, 401)
	api.do("GET", "/api/conversations/count", "wrong", "").mustStatus(t, 401)
	api.do("POST", "/api/conversations", keyAll, `{"conversation_id":"`+convA+`","initial_message":{"role":"user","content":"first"}}`).mustStatus(t, 201)
	api.post(convA, "second")
	api.do("POST", "/api/conversations/"+convA+"/events", keyAll, `{"source":"agent","kind":"ActionEvent",`+actionFields+`}`).mustStatus(t, 200)

	r := api.do("GET", "/api/conversations/"+convA+"/events/search?sort_order=TIMESTAMP_DESC&limit=2", keyAll, "").mustStatus(t, 200)
	var page struct {
		Items []struct {
			ID, Kind   string
			Source     core.Source
			LLMMessage *struct {
				Content []core.ContentPart `json:"content"`
			} `json:"llm_message"`
		}
		NextPageID *string `json:"next_page_id"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 2 || page.Items[0].Kind != "ActionEvent" || page.Items[0].Source != core.SourceAgent ||
		page.Items[1].LLMMessage == nil || page.Items[1].LLMMessage.Content[0].Text != "second" || page.NextPageID == nil {
		t.Fatalf("page = %s", r.body)
	}
	r = api.do("GET", "/api/conversations/"+convA+"/events/search?sort_order=TIMESTAMP_DESC&limit=2&page_id="+*page.NextPageID, keyAll, "").mustStatus(t, 200)
	if !bytes.Contains(r.body, []byte(`"text":"first"`)) || !bytes.HasSuffix(r.body, []byte(`"next_page_id":null}`)) {
		t.Errorf("last page = %s", r.body)
	}
	if r := api.do("GET", "/api/conversations/"+convA+"/events/count?source=user", keyAll, ""); string(r.body) != "2" {
		t.Errorf("user events = %s, want 2", r.body)
	}
	api.do("POST", "/api/conversations/"+convA+"/events", keyAll, `{"role":"user","content":"`+strings.Repeat("z", testMaxBody)+`"}`).mustStatus(t, 413)
	api.do("GET", "/api/conversations/count?session_api_key="+url.QueryEscape(keyAll), keyAll, "").mustStatus(t, 200)
	if logs := access.String(); !strings.Contains(logs, "/api/conversations/count") || strings.Contains(logs, keyAll) || strings.Contains(logs, url.QueryEscape(keyAll)) {
		t.Errorf("access log lacks the REST request or holds the key:\n%s", logs)
	}
	api.do("DELETE", "/api/conversations/"+convA, keyAll, "").mustStatus(t, 200)
	api.do("GET", "/api/conversations/"+convA, keyAll, "").mustStatus(t, 404)
	api.do("POST", "/api/conversations/"+convA+"/events", keyAll, `{"role":"user","content":"late"}`).mustStatus(t, 404)
}
