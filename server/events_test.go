package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/memstore"
)

// The test authenticator's keys.
const (
	goodKey   = "good-key+/=@#"
	scopedKey = "scoped-key"
	brokenKey = "broken-key"
	faultKey  = "fault-key" // cannot be checked, through its own fault
)

// scopedID is the one conversation scopedKey may open.
var scopedID = "00000000-0000-4000-8000-000000000001"

// sessionKeyAuth reads session_api_key from the query, else
// X-Session-API-Key: goodKey allows everything, scopedKey allows scopedID
// only, brokenKey cannot be checked, anything else is denied.
type sessionKeyAuth struct{}

func (sessionKeyAuth) Name() string { return "session-key" }

func (sessionKeyAuth) Authenticate(_ context.Context, req *core.Request) core.Result {
	key := req.QueryValue("session_api_key")
	if key == "" {
		key = req.Header.Get("X-Session-API-Key")
	}
	switch key {
	case "":
		return core.Abstained()
	case goodKey:
		return core.Allowed(&core.Principal{Subject: core.KeyFingerprint(key)})
	case scopedKey:
		return core.Allowed(&core.Principal{Subject: "scoped", Scopes: []string{scopedID}})
	case brokenKey:
		return core.Failed(errors.New("key service unreachable"))
	case faultKey:
		return core.FailedByRequest(errors.New("key names an unknown signing key"))
	}
	return core.Denied("unknown key")
}

// testChains serves the same chain for every route.
type testChains struct{ chain *core.Chain }

func (c testChains) Chain(core.Route) *core.Chain { return c.chain }

// lockedBuffer is an io.Writer safe for concurrent log lines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// edge is a running server on a loopback httptest listener, which serves
// upgrades directly as Serve does.
type edge struct {
	srv   *Server
	sys   *actors.System
	store *memstore.Store
	ts    *httptest.Server
	logs  *lockedBuffer
}

// newEdge starts a server; mutate adjusts the default config first, and
// each setup runs on the server before it starts serving.
func newEdge(t testing.TB, mutate func(*config.Config), setup ...func(*Server)) *edge {
	t.Helper()
	cfg := config.Default()
	cfg.Limits.PingInterval = 0
	if mutate != nil {
		mutate(&cfg)
	}
	e := buildEdge(t, cfg, sessionKeyAuth{})
	for _, f := range setup {
		f(e.srv)
	}
	e.ts = serveDirect(e.srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		e.ts.Close()
	})
	return e
}

// serveDirect serves srv on a loopback httptest listener as the binary
// serves a plain listener: upgrades directly (direct.go), the rest by
// net/http.
func serveDirect(srv *Server) *httptest.Server {
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Listener = srv.listenDirect(ts.Listener)
	ts.Start()
	return ts
}

// buildEdge builds a server for cfg whose every route runs a chain of
// auths, logging to e.logs at debug level; it does not serve yet (e.ts is
// nil).
func buildEdge(t testing.TB, cfg config.Config, auths ...core.Authenticator) *edge {
	t.Helper()
	chain, err := core.NewChain(core.RouteEvents, auths...)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st := memstore.New()
	sys, err := actors.New(actors.Options{Store: st, Chains: testChains{chain}, Logger: log, Limits: cfg.Limits})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Config: cfg, Actors: sys, Store: st, Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return &edge{srv: srv, sys: sys, store: st, logs: logs}
}

func (e *edge) conversation(t testing.TB) string {
	t.Helper()
	now := time.Now().UTC()
	c := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle, CreatedAt: now, UpdatedAt: now}
	if _, _, err := e.sys.CreateConversation(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

func (e *edge) post(t testing.TB, id, text string) *core.Event {
	t.Helper()
	ev, err := e.sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, textBody(text))
	if err != nil {
		t.Fatalf("post event: %v", err)
	}
	return ev
}

func textBody(text string) json.RawMessage {
	return core.MessageBody(&core.UserMessage{Role: "user", Content: []core.ContentPart{{Type: "text", Text: text}}})
}

// eventsURL is the socket URL with the key in the query and extra params.
func (e *edge) eventsURL(id, query string) string {
	u := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/sockets/events/" + id
	if query != "" {
		u += "?" + query
	}
	return u
}

// dial opens a socket with goodKey in the header.
func (e *edge) dial(t testing.TB, id, query string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(e.eventsURL(id, query), http.Header{"X-Session-API-Key": {goodKey}})
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, statusOf(resp))
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialReady dials and reads the full_state frame.
func (e *edge) dialReady(t testing.TB, id, query string) *websocket.Conn {
	t.Helper()
	c := e.dial(t, id, query)
	if f := readFrame(t, c); f["kind"] != core.KindStateUpdate || f["key"] != core.StateKeyFullState {
		t.Fatalf("first frame = %v, want full_state", f)
	}
	return c
}

func statusOf(resp *http.Response) any {
	if resp == nil {
		return nil
	}
	return resp.Status
}

func readFrame(t testing.TB, c *websocket.Conn) map[string]any {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f map[string]any
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("frame is not JSON: %v: %s", err, data)
	}
	return f
}

// expectClose reads until the server's close frame and checks its code.
func expectClose(t testing.TB, c *websocket.Conn, want int) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read ended with %v, want close %d", err, want)
		}
		if ce.Code != want {
			t.Fatalf("closed with %d %q, want %d", ce.Code, ce.Text, want)
		}
		return
	}
}

func textOf(t testing.TB, f map[string]any) string {
	t.Helper()
	text, err := frameText(f)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// frameText is textOf for goroutines other than the test's.
func frameText(f map[string]any) (string, error) {
	msg, _ := f["llm_message"].(map[string]any)
	parts, _ := msg["content"].([]any)
	if len(parts) != 1 {
		return "", fmt.Errorf("frame %v has no single content part", f)
	}
	text, _ := parts[0].(map[string]any)["text"].(string)
	return text, nil
}

// postErr is post for goroutines other than the test's.
func (e *edge) postErr(id, text string) error {
	if _, err := e.sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, textBody(text)); err != nil {
		return fmt.Errorf("post event %q: %w", text, err)
	}
	return nil
}

func TestHandshakeRefusals(t *testing.T) {
	e := newEdge(t, func(c *config.Config) { c.Server.AllowedOrigins = []string{"https://app.example"} })
	id := e.conversation(t)
	tests := []struct {
		name       string
		path       string // after /sockets/events/
		query      string
		header     http.Header
		plain      bool // a plain GET, no upgrade
		wantStatus int
		wantDetail string
	}{
		{"malformed id", "not-a-uuid", "", http.Header{"X-Session-API-Key": {goodKey}}, false, 400, "conversation id is not a UUID"},
		{"not an upgrade", id, "", http.Header{"X-Session-API-Key": {goodKey}}, true, 400, "expected a WebSocket upgrade request"},
		{"foreign origin", id, "", http.Header{"X-Session-API-Key": {goodKey}, "Origin": {"https://evil.example"}}, false, 403, "Origin not allowed"},
		{"since without timestamp", id, "resend_mode=since", http.Header{"X-Session-API-Key": {goodKey}}, false, 400, "after_timestamp is required with resend_mode=since"},
		{"no credentials", id, "", nil, false, 401, "Authentication failed"},
		{"wrong key", id, "session_api_key=nope", nil, false, 401, "Authentication failed"},
		{"wrong query key beats right header", id, "session_api_key=nope", http.Header{"X-Session-API-Key": {goodKey}}, false, 401, "Authentication failed"},
		{"chain cannot decide", id, "", http.Header{"X-Session-API-Key": {brokenKey}}, false, 503, "Authentication is temporarily unavailable"},
		{"scopes exclude the conversation", id, "", http.Header{"X-Session-API-Key": {scopedKey}}, false, 403, "Forbidden: this credential may not open that conversation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resp *http.Response
			var err error
			if tt.plain {
				req, _ := http.NewRequest(http.MethodGet, e.ts.URL+"/sockets/events/"+tt.path, nil)
				req.Header = tt.header
				resp, err = http.DefaultClient.Do(req)
			} else {
				var c *websocket.Conn
				u := e.eventsURL(tt.path, tt.query)
				c, resp, err = websocket.DefaultDialer.Dial(u, tt.header)
				if err == nil {
					c.Close()
					t.Fatal("handshake succeeded, want it refused")
				}
			}
			if resp == nil {
				t.Fatalf("no HTTP response: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			var body struct{ Detail string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if body.Detail != tt.wantDetail {
				t.Errorf("detail = %q, want %q", body.Detail, tt.wantDetail)
			}
			if got := resp.Header.Get("Retry-After"); (tt.wantStatus == 503) != (got != "") {
				t.Errorf("Retry-After = %q with status %d", got, tt.wantStatus)
			}
		})
	}
}

func TestHandshakeAccepts(t *testing.T) {
	e := newEdge(t, func(c *config.Config) { c.Server.AllowedOrigins = []string{"https://app.example"} })
	tests := []struct {
		name   string
		query  string
		header http.Header
	}{
		{"key in header, no origin", "", http.Header{"X-Session-API-Key": {goodKey}}},
		{"key with +/=@# unencoded in query", "session_api_key=" + goodKey, nil},
		{"key percent-encoded in query", "session_api_key=good-key%2B%2F%3D%40%23", nil},
		{"listed origin", "", http.Header{"X-Session-API-Key": {goodKey}, "Origin": {"https://app.example"}}},
		{"same-host origin", "", http.Header{"X-Session-API-Key": {goodKey}, "Origin": {e.ts.URL}}},
		{"scoped key on its conversation", "", http.Header{"X-Session-API-Key": {scopedKey}}},
	}
	now := time.Now().UTC()
	if _, _, err := e.sys.CreateConversation(context.Background(), &core.Conversation{ID: scopedID, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := e.eventsURL(scopedID, tt.query)
			if strings.Contains(tt.query, "#") { // a raw '#' would start the fragment
				u = strings.Replace(u, "#", "%23", 1)
			}
			c, resp, err := websocket.DefaultDialer.Dial(u, tt.header)
			if err != nil {
				t.Fatalf("dial: %v (%v)", err, statusOf(resp))
			}
			defer c.Close()
			if f := readFrame(t, c); f["key"] != core.StateKeyFullState {
				t.Errorf("first frame %v, want full_state", f)
			}
		})
	}
}

func TestRejectWithCloseSends4001(t *testing.T) {
	e := newEdge(t, func(c *config.Config) { c.Auth.RejectWith = config.RejectWithClose })
	c, resp, err := websocket.DefaultDialer.Dial(e.eventsURL(e.conversation(t), "session_api_key=nope"), nil)
	if err != nil {
		t.Fatalf("dial: %v (%v), want a 101 then a close", err, statusOf(resp))
	}
	defer c.Close()
	expectClose(t, c, core.CloseAuthFailed)
}

func TestFullStateIsFirstFrame(t *testing.T) {
	e := newEdge(t, nil)
	id := e.conversation(t)
	e.post(t, id, "history")
	c := e.dial(t, id, "resend_all=true")
	f := readFrame(t, c)
	if f["kind"] != core.KindStateUpdate || f["key"] != core.StateKeyFullState {
		t.Fatalf("first frame %v, want full_state", f)
	}
	if v, _ := f["value"].(map[string]any); v["id"] != id {
		t.Errorf("full_state value %v, want the conversation %s", f["value"], id)
	}
	if f := readFrame(t, c); textOf(t, f) != "history" {
		t.Errorf("second frame %v, want the replayed event", f)
	}
}

func TestMessageBroadcastToEverySubscriber(t *testing.T) {
	e := newEdge(t, nil)
	id := e.conversation(t)
	sender := e.dialReady(t, id, "")
	other := e.dialReady(t, id, "")
	if err := sender.WriteMessage(websocket.TextMessage, []byte(`{"role":"user","content":"hi all"}`)); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*websocket.Conn{"sender": sender, "other": other} {
		f := readFrame(t, c)
		if f["kind"] != core.KindMessage || f["source"] != "user" || textOf(t, f) != "hi all" {
			t.Errorf("%s got %v, want the user MessageEvent", name, f)
		}
	}
}

func TestClientFrames(t *testing.T) {
	tests := []struct {
		name     string
		frame    string
		wantCode string // "" means the frame is ignored silently
	}{
		{"not JSON", `{{{`, core.CodeInvalidJSON},
		{"wrong role", `{"role":"assistant","content":"x"}`, core.CodeInvalidMessage},
		{"bad content", `{"role":"user","content":42}`, core.CodeInvalidMessage},
		{"auth frame after auth", `{"type":"auth","session_api_key":"whatever"}`, ""},
	}
	e := newEdge(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dialReady(t, e.conversation(t), "")
			for _, frame := range []string{tt.frame, `{"role":"user","content":"still open"}`} {
				if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
					t.Fatal(err)
				}
			}
			f := readFrame(t, c)
			if tt.wantCode != "" {
				if f["kind"] != core.KindServerError || f["code"] != tt.wantCode || f["detail"] == "" {
					t.Fatalf("got %v, want ServerErrorEvent %s", f, tt.wantCode)
				}
				f = readFrame(t, c)
			}
			if f["kind"] != core.KindMessage || textOf(t, f) != "still open" {
				t.Errorf("got %v, want the next message on the same socket", f)
			}
		})
	}
}

func TestUnknownConversationCloses4004(t *testing.T) {
	e := newEdge(t, nil)
	expectClose(t, e.dial(t, core.NewID(), ""), core.CloseConversationNotFnd)
}

func TestSubscriberCapCloses1013(t *testing.T) {
	e := newEdge(t, func(c *config.Config) { c.Limits.SubscribersPerConversation = 3 })
	id := e.conversation(t)
	for range 3 {
		e.dialReady(t, id, "")
	}
	expectClose(t, e.dial(t, id, ""), core.CloseTryAgainLater)
}

// TestReplayModes connects with each replay mode while events are being
// published, then checks the socket saw every expected event exactly once,
// in order.
func TestReplayModes(t *testing.T) {
	const before, during = 40, 150
	tests := []struct {
		name  string
		query func(evs []*core.Event) string
		first func(evs []*core.Event) int // index into the log of the first event expected
	}{
		{"resend_all", func([]*core.Event) string { return "resend_all=true" }, func([]*core.Event) int { return 0 }},
		{"resend_mode=all wins over resend_all=false", func([]*core.Event) string { return "resend_mode=all&resend_all=false" }, func([]*core.Event) int { return 0 }},
		{"resend_mode=since", func(evs []*core.Event) string {
			return "resend_mode=since&after_timestamp=" + evs[10].Timestamp.Format(core.TimestampLayout)
		}, func(evs []*core.Event) int {
			for i, ev := range evs {
				if !ev.Timestamp.Before(evs[10].Timestamp) {
					return i
				}
			}
			return -1
		}},
		{"after_id", func(evs []*core.Event) string { return "after_id=" + evs[24].ID }, func([]*core.Event) int { return 25 }},
	}
	e := newEdge(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := e.conversation(t)
			var evs []*core.Event
			for i := range before {
				evs = append(evs, e.post(t, id, fmt.Sprint("before ", i)))
			}
			posted := make(chan error, 1)
			go func() {
				for i := range during {
					if err := e.postErr(id, fmt.Sprint("during ", i)); err != nil {
						posted <- err
						return
					}
				}
				posted <- nil
			}()
			c := e.dialReady(t, id, tt.query(evs))
			if err := <-posted; err != nil {
				t.Fatal(err)
			}
			all, _ := e.store.Events(context.Background(), id, 0, 0)
			for i := tt.first(evs); i < len(all); i++ {
				f := readFrame(t, c)
				if f["id"] != all[i].ID {
					t.Fatalf("frame for log index %d is %v (%v), want %s: lost, duplicated or reordered", i, f["id"], textOf(t, f), all[i].ID)
				}
			}
			e.post(t, id, "end")
			if f := readFrame(t, c); textOf(t, f) != "end" {
				t.Fatalf("after the log, got %v, want the next live event", textOf(t, f))
			}
		})
	}
}

func TestDeleteClosesSockets4004(t *testing.T) {
	e := newEdge(t, nil)
	id := e.conversation(t)
	a := e.dialReady(t, id, "")
	b := e.dialReady(t, id, "")
	if err := e.sys.DeleteConversation(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	expectClose(t, a, core.CloseConversationNotFnd)
	expectClose(t, b, core.CloseConversationNotFnd)
}

func TestShutdownCloses1001(t *testing.T) {
	e := newEdge(t, nil)
	var conns []*websocket.Conn
	for range 2 {
		id := e.conversation(t)
		for range 3 {
			conns = append(conns, e.dialReady(t, id, ""))
		}
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	for _, c := range conns {
		expectClose(t, c, core.CloseGoingAway)
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, resp, err := websocket.DefaultDialer.Dial(e.eventsURL(core.NewID(), ""), http.Header{"X-Session-API-Key": {goodKey}}); err == nil {
		t.Errorf("dial after shutdown succeeded (%v)", statusOf(resp))
	}
}

func TestOversizeFrameCloses1009(t *testing.T) {
	e := newEdge(t, func(c *config.Config) { c.Limits.MaxFrameBytes = 1024 })
	c := e.dialReady(t, e.conversation(t), "")
	big := `{"role":"user","content":"` + strings.Repeat("x", 2048) + `"}`
	if err := c.WriteMessage(websocket.TextMessage, []byte(big)); err != nil {
		t.Fatal(err)
	}
	expectClose(t, c, websocket.CloseMessageTooBig)
}

// TestSlowConsumerCloses4008 has one client stop reading while messages keep
// coming: it is closed with 4008, and a client that reads receives every
// message. The publisher waits for the reading client after each message, so
// only the stalled one can fall behind.
func TestSlowConsumerCloses4008(t *testing.T) {
	const n, size = 800, 16 << 10
	e := newEdge(t, func(c *config.Config) {
		c.Limits.SendQueueBytes = 64 << 10
		// Far above the test's run time on a loaded machine: the queue
		// bound, not the write deadline, must be what ends the slow client.
		c.Limits.WriteTimeout = time.Minute
	})
	id := e.conversation(t)
	dialer := *websocket.DefaultDialer
	dialer.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tcp, ok := conn.(*net.TCPConn); ok {
			_ = tcp.SetReadBuffer(32 << 10) // a modest window, so the server's queue fills soon
		}
		return conn, err
	}
	slow, _, err := dialer.Dial(e.eventsURL(id, ""), http.Header{"X-Session-API-Key": {goodKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast := e.dialReady(t, id, "")

	filler := strings.Repeat("y", size)
	for i := range n {
		e.post(t, id, fmt.Sprint(i, filler))
		if f := readFrame(t, fast); !strings.HasPrefix(textOf(t, f), fmt.Sprint(i, "y")) {
			t.Fatalf("reading client got message %.10s, want %d", textOf(t, f), i)
		}
	}
	expectClose(t, slow, core.CloseSlowConsumer)
}

// TestManyConnections runs 200 sockets across 20 conversations; each client
// sends one message and every client must receive every message of its
// conversation exactly once.
func TestManyConnections(t *testing.T) {
	const convs, perConv = 20, 10
	e := newEdge(t, nil)
	type client struct {
		conv int
		c    *websocket.Conn
	}
	var clients []client
	for i := range convs {
		id := e.conversation(t)
		for range perConv {
			clients = append(clients, client{i, e.dial(t, id, "")})
		}
	}
	for _, cl := range clients {
		if f := readFrame(t, cl.c); f["key"] != core.StateKeyFullState {
			t.Fatalf("first frame %v", f)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fmt.Sprintf(`{"role":"user","content":"c%d-m%d"}`, cl.conv, i)
			if err := cl.c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				errs <- err
				return
			}
			seen := map[string]int{}
			for range perConv {
				_ = cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, data, err := cl.c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
				var f map[string]any
				_ = json.Unmarshal(data, &f)
				text, err := frameText(f)
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
				if !strings.HasPrefix(text, fmt.Sprintf("c%d-", cl.conv)) {
					errs <- fmt.Errorf("client %d of conversation %d got %q", i, cl.conv, text)
					return
				}
				seen[text]++
			}
			if len(seen) != perConv {
				errs <- fmt.Errorf("client %d saw %d distinct messages, want %d: %v", i, len(seen), perConv, seen)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestKeepalive checks that pings keep a reading client alive past the idle
// timeout, and that a client that never answers is dropped.
func TestKeepalive(t *testing.T) {
	e := newEdge(t, func(c *config.Config) {
		c.Limits.IdleTimeout = 3 * time.Second
		c.Limits.PingInterval = 300 * time.Millisecond
	})
	id := e.conversation(t)
	alive := e.dialReady(t, id, "")
	pings := make(chan struct{}, 1)
	alive.SetPingHandler(func(data string) error {
		select { // never block the reader: that would stop the pongs
		case pings <- struct{}{}:
		default:
		}
		return alive.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(30*time.Second))
	})
	frames := make(chan []byte, 100)
	go func() { // reading is what answers pings
		defer close(frames)
		for {
			_, data, err := alive.ReadMessage()
			if err != nil {
				return
			}
			frames <- data
		}
	}()
	// readText waits for the alive client's next frame.
	readText := func() string {
		t.Helper()
		select {
		case data, ok := <-frames:
			if !ok {
				t.Fatal("the client answering pings was disconnected")
			}
			var f map[string]any
			if err := json.Unmarshal(data, &f); err != nil {
				t.Fatalf("frame is not JSON: %v: %s", err, data)
			}
			return textOf(t, f)
		case <-time.After(30 * time.Second):
			t.Fatal("no frame in 30s")
		}
		return ""
	}
	// Wait for three pings; the bound is generous because these machines are
	// shared, and speed is not what this test checks.
	for i := range 3 {
		select {
		case <-pings:
		case <-time.After(30 * time.Second):
			t.Fatalf("got %d pings in 30s with a 300ms interval", i)
		}
	}
	e.post(t, id, "still here")
	if got := readText(); got != "still here" {
		t.Fatalf("alive client read %q, want still here", got)
	}
	deaf := e.dialReady(t, id, "")
	_ = deaf // never reads again, so never answers a ping
	// The deaf socket goes after an idle timeout; the alive one, connected
	// earlier, has by then outlived an idle timeout too.
	deadline := time.Now().Add(30 * time.Second)
	for e.srv.sockets.len() > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sockets open after 30s, want the deaf one dropped", e.srv.sockets.len())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.srv.sockets.len(); n != 1 {
		t.Fatalf("%d sockets open, want exactly the one answering pings", n)
	}
	e.post(t, id, "after the idle timeout")
	if got := readText(); got != "after the idle timeout" {
		t.Fatalf("alive client read %q after the deaf one was dropped, want the new event", got)
	}
}

func TestAccessLogNeverHoldsTheKey(t *testing.T) {
	e := newEdge(t, nil)
	id := e.conversation(t)
	c, _, err := websocket.DefaultDialer.Dial(e.eventsURL(id, "session_api_key="+strings.Replace(goodKey, "#", "%23", 1)+"&resend_all=true"), nil)
	if err != nil {
		t.Fatal(err)
	}
	readFrame(t, c)
	c.Close()
	for _, q := range []string{"session_api_key=wrong-secret-1", "Session_Api_Key=wrong-secret-2", "session%5Fapi%5Fkey=wrong-secret-3"} {
		if _, resp, err := websocket.DefaultDialer.Dial(e.eventsURL(id, q), http.Header{"Authorization": {"Bearer wrong-secret-4"}, "X-Session-API-Key": {"wrong-secret-5"}}); err == nil || resp.StatusCode != 401 {
			t.Fatalf("dial with %s: %v", q, err)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, e.ts.URL+"/alive?token=wrong-secret-6", nil)
	req.Header.Set("X-Session-API-Key", goodKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// The 101 line is written when the socket's handler returns, after the
	// close above reaches the server: wait for it.
	logs := e.logs.String()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs, `"status":101`) && time.Now().Before(deadline); logs = e.logs.String() {
		time.Sleep(10 * time.Millisecond)
	}
	for _, secret := range []string{"good-key", "wrong-secret"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log holds %q:\n%s", secret, logs)
		}
	}
	for _, want := range []string{`"status":101`, `"status":401`, `"query":"session_api_key=***&resend_all=true"`, "/sockets/events/" + id} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

func TestRedactQuery(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"resend_all=true", "resend_all=true"},
		{"session_api_key=abc", "session_api_key=***"},
		{"SESSION_API_KEY=abc&x=1", "SESSION_API_KEY=***&x=1"},
		{"session%5Fapi%5Fkey=a%2Bb", "session%5Fapi%5Fkey=***"},
		{"a=1;token=t", "a=1&token=***"},
		{"session_api_key", "session_api_key"},
		{"bad%zz=1&key=k", "bad%zz=1&key=***"},
	}
	for _, tt := range tests {
		if got := redactQuery(tt.in); got != tt.want {
			t.Errorf("redactQuery(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHealthRoutes(t *testing.T) {
	notReady := errors.New("plugin query is starting")
	var ready error = notReady
	var mu sync.Mutex
	e := newEdge(t, nil, func(s *Server) {
		s.ready = []ReadyCheck{{Component: "plugins", Check: func(context.Context) error { mu.Lock(); defer mu.Unlock(); return ready }}}
	})
	get := func(path string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Get(e.ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		data, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(data, &body); err != nil {
			t.Fatalf("%s: body %q is not JSON", path, data)
		}
		return resp.StatusCode, body
	}
	tests := []struct {
		path       string
		wantStatus int
		wantField  string
		wantValue  any
	}{
		{"/alive", 200, "status", "ok"},
		{"/health", 200, "status", "ok"},
		{"/ready", 503, "status", "not_ready"},
		{"/server_info", 200, "version", "test"},
	}
	for _, tt := range tests {
		status, body := get(tt.path)
		if status != tt.wantStatus || body[tt.wantField] != tt.wantValue {
			t.Errorf("GET %s = %d %v, want %d with %s=%v", tt.path, status, body, tt.wantStatus, tt.wantField, tt.wantValue)
		}
	}
	mu.Lock()
	ready = nil
	mu.Unlock()
	if status, body := get("/ready"); status != 200 || body["status"] != "ready" {
		t.Errorf("GET /ready once ready = %d %v", status, body)
	}
	if _, body := get("/server_info"); body["uptime"] == nil || body["idle_time"] == nil {
		t.Errorf("server_info %v lacks uptime or idle_time", body)
	}
}

// TestServeShutsDownWhenContextEnds runs Serve on a real listener, as the
// binary does, and cancels its context: sockets close with 1001 and Serve
// returns nil.
func TestServeShutsDownWhenContextEnds(t *testing.T) {
	e := newEdge(t, func(c *config.Config) { c.Server.ShutdownTimeout = 5 * time.Second })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ctx, ln) }()
	id := e.conversation(t)
	u := "ws://" + ln.Addr().String() + "/sockets/events/" + id
	c, _, err := websocket.DefaultDialer.Dial(u, http.Header{"X-Session-API-Key": {goodKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readFrame(t, c)
	cancel()
	expectClose(t, c, core.CloseGoingAway)
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(30 * time.Second): // well past the 5 s shutdown timeout
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepts after shutdown")
	}
}

// TestLongReplayFitsASmallQueue replays a history 20 times the send queue
// bound over a real socket while events keep coming: no 4008, every event
// once, in order.
func TestLongReplayFitsASmallQueue(t *testing.T) {
	e := newEdge(t, func(c *config.Config) { c.Limits.SendQueueBytes = 32 << 10 })
	id := e.conversation(t)
	filler := strings.Repeat("z", 1000)
	for i := range 600 {
		e.post(t, id, fmt.Sprint(i, filler))
	}
	posted := make(chan error, 1)
	go func() {
		for i := range 100 {
			if err := e.postErr(id, fmt.Sprint(600+i, filler)); err != nil {
				posted <- err
				return
			}
		}
		posted <- nil
	}()
	c := e.dialReady(t, id, "resend_all=true")
	for i := range 700 {
		if got := textOf(t, readFrame(t, c)); got != fmt.Sprint(i, filler) {
			t.Fatalf("event %d is %.12q...: lost, duplicated or out of order", i, got)
		}
	}
	if err := <-posted; err != nil {
		t.Fatal(err)
	}
}
