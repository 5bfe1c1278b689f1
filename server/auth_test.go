package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/bearer"
	"github.com/agent-server/agent-server/plugins/firstmessage"
	"github.com/agent-server/agent-server/plugins/header"
	"github.com/agent-server/agent-server/plugins/query"
	"github.com/agent-server/agent-server/plugins/subprotocol"
)

// pluginKey is the session API key of the plugin-chain edge.
const pluginKey = "plugin-key+/="

// pluginEdge is an edge whose chain is the default events chain of the
// built-in plugins, run in-process, over the key set keys.
type pluginEdge struct {
	*edge
	locals []*plugins.Local
	calls  *atomic.Int64 // authenticator calls that were not skipped
}

func newPluginEdge(t *testing.T, mutate func(*config.Config), keys ...string) *pluginEdge {
	t.Helper()
	cfg := config.Default()
	cfg.Limits.PingInterval = 0
	if mutate != nil {
		mutate(&cfg)
	}
	if len(keys) == 0 {
		keys = []string{pluginKey}
	}
	digests, err := plugins.KeyDigests(keys)
	if err != nil {
		t.Fatal(err)
	}
	pe := &pluginEdge{calls: &atomic.Int64{}}
	var auths []core.Authenticator
	for _, p := range []plugins.Plugin{query.New(), header.New(), bearer.New(), subprotocol.New(), firstmessage.New()} {
		l, err := plugins.NewLocal(context.Background(), p.Info(context.Background()).Name, p, plugins.ConfigureRequest{KeyDigests: digests})
		if err != nil {
			t.Fatal(err)
		}
		pe.locals = append(pe.locals, l)
		auths = append(auths, skipCounter{l, pe.calls})
	}
	pe.edge = buildEdge(t, cfg, auths...)
	pe.ts = serveDirect(pe.srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := pe.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		pe.ts.Close()
		if strings.Contains(pe.logs.String(), pluginKey) {
			t.Errorf("the key reached the log")
		}
	})
	return pe
}

// rekey swaps the key set of every plugin, as a config reload does.
func (pe *pluginEdge) rekey(t *testing.T, keys ...string) {
	t.Helper()
	digests, err := plugins.KeyDigests(keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range pe.locals {
		name := l.Name()
		var p plugins.Plugin
		switch name {
		case "query":
			p = query.New()
		case "header":
			p = header.New()
		case "bearer":
			p = bearer.New()
		case "subprotocol":
			p = subprotocol.New()
		default:
			p = firstmessage.New()
		}
		nl, err := plugins.NewLocal(context.Background(), name, p, plugins.ConfigureRequest{KeyDigests: digests})
		if err != nil {
			t.Fatal(err)
		}
		*pe.locals[i] = *nl
	}
}

// skipCounter counts the calls the plugin host would have made: those
// whose inputs are present (Local abstains on the others without a call).
type skipCounter struct {
	*plugins.Local
	calls *atomic.Int64
}

func (s skipCounter) Authenticate(ctx context.Context, req *core.Request) core.Result {
	res := s.Local.Authenticate(ctx, req)
	if res.Decision != core.Abstain {
		s.calls.Add(1)
	}
	return res
}

// dialWith opens a socket with header h; it fails the test unless the
// handshake succeeds.
func (pe *pluginEdge) dialWith(t *testing.T, id string, h http.Header, protos ...string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, Subprotocols: protos}
	c, resp, err := d.Dial(pe.eventsURL(id, ""), h)
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, statusOf(resp))
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sendJSON(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	b, ok := v.(string)
	if !ok {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		b = string(raw)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(b)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// closeFrame reads the next frame and wants it to be a close, returning its
// code and text: any data frame first is a failure.
func closeFrame(t *testing.T, c *websocket.Conn, d time.Duration) (int, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, data, err := c.ReadMessage()
	if err == nil {
		t.Fatalf("got frame %s, want a close", data)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("read ended with %v, want a close frame", err)
	}
	return ce.Code, ce.Text
}

func authFrame(key string) map[string]string {
	return map[string]string{"type": "auth", "session_api_key": key}
}

func TestFirstMessageAuth(t *testing.T) {
	pe := newPluginEdge(t, nil)
	id := pe.conversation(t)
	c := pe.dialWith(t, id, nil)
	sendJSON(t, c, authFrame(pluginKey))
	// Sent before the auth result: processed only after it.
	sendJSON(t, c, map[string]any{"role": "user", "content": "early"})
	if f := readFrame(t, c); f["kind"] != core.KindStateUpdate || f["key"] != core.StateKeyFullState {
		t.Fatalf("first frame = %v, want full_state", f)
	}
	if got := textOf(t, readFrame(t, c)); got != "early" {
		t.Fatalf("second frame text = %q, want the early message", got)
	}
	sendJSON(t, c, map[string]any{"role": "user", "content": "later"})
	if got := textOf(t, readFrame(t, c)); got != "later" {
		t.Fatalf("echo = %q, want later", got)
	}
}

func TestFirstMessageFailuresClose4001(t *testing.T) {
	// Only the timeout case gets a short first-message timeout; the others
	// get one long enough that only their bad first message can close them.
	short := newPluginEdge(t, func(c *config.Config) { c.Auth.FirstMessageTimeout = 200 * time.Millisecond })
	long := newPluginEdge(t, func(c *config.Config) { c.Auth.FirstMessageTimeout = 30 * time.Second })
	shortID, longID := short.conversation(t), long.conversation(t)
	tests := []struct {
		name  string
		first any // nil sends nothing: the timeout
	}{
		{"timeout", nil},
		{"malformed JSON", `{"type":"auth",`},
		{"wrong type", map[string]string{"type": "hello", "session_api_key": pluginKey}},
		{"a user message", map[string]any{"role": "user", "content": "hi"}},
		{"wrong key", authFrame("wrong")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pe, id := long, longID
			if tt.first == nil {
				pe, id = short, shortID
			}
			c := pe.dialWith(t, id, nil)
			if tt.first != nil {
				sendJSON(t, c, tt.first)
				sendJSON(t, c, map[string]any{"role": "user", "content": "must not be stored"})
			}
			code, text := closeFrame(t, c, 30*time.Second)
			if code != core.CloseAuthFailed || text != "Authentication failed" {
				t.Fatalf("closed %d %q, want 4001 Authentication failed", code, text)
			}
		})
	}
	for _, e := range []struct {
		pe *pluginEdge
		id string
	}{{short, shortID}, {long, longID}} {
		evs, err := e.pe.store.Events(context.Background(), e.id, 0, 100)
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		if len(evs) != 0 {
			t.Errorf("%d events stored by unauthenticated sockets", len(evs))
		}
	}
}

// A credential that is present but wrong is refused before the upgrade:
// first_message is never a second chance.
func TestWrongPreUpgradeKeyHasNoFallback(t *testing.T) {
	pe := newPluginEdge(t, nil)
	id := pe.conversation(t)
	tests := []struct {
		name   string
		query  string
		header http.Header
		protos []string
	}{
		{"wrong query key", "session_api_key=wrong", nil, nil},
		{"wrong header key", "", http.Header{"X-Session-API-Key": {"wrong"}}, nil},
		{"wrong bearer", "", http.Header{"Authorization": {"Bearer wrong"}}, nil},
		{"wrong subprotocol key", "", nil, []string{core.Subprotocol, subprotocol.Entry("wrong")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, Subprotocols: tt.protos}
			c, resp, err := d.Dial(pe.eventsURL(id, tt.query), tt.header)
			if err == nil {
				c.Close()
				t.Fatal("upgraded; want 401")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("response %v, want 401", statusOf(resp))
			}
		})
	}
}

func TestSubprotocolEcho(t *testing.T) {
	pe := newPluginEdge(t, nil)
	id := pe.conversation(t)
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, Subprotocols: []string{subprotocol.Entry(pluginKey), core.Subprotocol}}
	c, resp, err := d.Dial(pe.eventsURL(id, ""), nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, statusOf(resp))
	}
	defer c.Close()
	if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != core.Subprotocol {
		t.Fatalf("echoed %q, want only %s", got, core.Subprotocol)
	}
	if f := readFrame(t, c); f["key"] != core.StateKeyFullState {
		t.Fatalf("first frame = %v", f)
	}
}

// TestInboundRateLimit checks the limit at the socket: the burst passes, the
// rest gets rate_limited errors, and the socket stays open. The rate is so
// low that no token comes back during the test, so the counts are exact;
// refilling is TestTokenBucket's, in actors, on a fake clock.
func TestInboundRateLimit(t *testing.T) {
	pe := newPluginEdge(t, func(c *config.Config) {
		c.Limits.MessagesPerSecond = 0.001 // one token per 1000 s
		c.Limits.MessageBurst = 3
	})
	id := pe.conversation(t)
	c := pe.dialWith(t, id, http.Header{"X-Session-API-Key": {pluginKey}})
	readFrame(t, c) // full_state
	for range 6 {
		sendJSON(t, c, map[string]any{"role": "user", "content": "m"})
	}
	echoes, limited := 0, 0
	for range 6 {
		f := readFrame(t, c)
		switch {
		case f["kind"] == core.KindMessage:
			echoes++
		case f["code"] == core.CodeRateLimited:
			limited++
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
	if echoes != 3 || limited != 3 {
		t.Fatalf("%d echoes and %d rate_limited errors, want 3 and 3", echoes, limited)
	}
	// Still open, and still limited: another message gets another error.
	sendJSON(t, c, map[string]any{"role": "user", "content": "after"})
	if f := readFrame(t, c); f["code"] != core.CodeRateLimited {
		t.Fatalf("after the limit: %v, want another rate_limited error on the open socket", f)
	}
	if evs, err := pe.store.Events(context.Background(), id, 0, 100); err != nil || len(evs) != 3 {
		t.Fatalf("stored %d events (%v), want the 3 of the burst", len(evs), err)
	}
}

// After auth.failures_per_minute failures an address gets 429 with
// Retry-After, on both routes, and no authenticator runs.
func TestFailureLimit429(t *testing.T) {
	pe := newPluginEdge(t, func(c *config.Config) { c.Auth.FailuresPerMinute = 3 })
	id := pe.conversation(t)
	wrong := http.Header{"X-Session-API-Key": {"wrong"}}
	for i := range 3 {
		_, resp, err := websocket.DefaultDialer.Dial(pe.eventsURL(id, ""), wrong)
		if err == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %v, want 401", i, statusOf(resp))
		}
	}
	before := pe.calls.Load()
	for _, good := range []bool{false, true} {
		h := wrong
		if good {
			h = http.Header{"X-Session-API-Key": {pluginKey}}
		}
		_, resp, err := websocket.DefaultDialer.Dial(pe.eventsURL(id, ""), h)
		if err == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("good=%v after the limit: %v, want 429", good, statusOf(resp))
		}
		if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
			t.Errorf("Retry-After = %q", ra)
		}
	}
	req, _ := http.NewRequest("GET", pe.ts.URL+"/api/conversations/count", nil)
	req.Header.Set("X-Session-API-Key", pluginKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("REST after the limit: %d (Retry-After %q), want 429", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if got := pe.calls.Load(); got != before {
		t.Errorf("%d authenticator calls while limited, want none", got-before)
	}
}

func TestUnauthenticatedPerAddressCap(t *testing.T) {
	pe := newPluginEdge(t, func(c *config.Config) { c.Auth.UnauthenticatedPerAddress = 2 })
	id := pe.conversation(t)
	a := pe.dialWith(t, id, nil)
	pe.dialWith(t, id, nil)
	_, resp, err := websocket.DefaultDialer.Dial(pe.eventsURL(id, ""), nil)
	if err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third unauthenticated socket: %v, want 429", statusOf(resp))
	}
	// Authenticated sockets do not count.
	pe.dialWith(t, id, http.Header{"X-Session-API-Key": {pluginKey}})
	sendJSON(t, a, authFrame(pluginKey))
	readFrame(t, a)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, resp, err := websocket.DefaultDialer.Dial(pe.eventsURL(id, ""), nil)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after one authenticated: %v, want a free slot", statusOf(resp))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRevalidate(t *testing.T) {
	const newKey = "new-key"
	pe := newPluginEdge(t, nil, pluginKey, newKey)
	id := pe.conversation(t)
	byOld := pe.dialWith(t, id, http.Header{"X-Session-API-Key": {pluginKey}})
	byNew := pe.dialWith(t, id, http.Header{"X-Session-API-Key": {newKey}})
	byFirst := pe.dialWith(t, id, nil)
	sendJSON(t, byFirst, authFrame(pluginKey))
	for _, c := range []*websocket.Conn{byOld, byNew, byFirst} {
		if f := readFrame(t, c); f["key"] != core.StateKeyFullState {
			t.Fatalf("first frame %v", f)
		}
	}
	if n := pe.sys.Revalidate(context.Background()); n != 0 {
		t.Fatalf("Revalidate before any change closed %d", n)
	}
	pe.rekey(t, newKey)
	if n := pe.sys.Revalidate(context.Background()); n != 2 {
		t.Fatalf("Revalidate closed %d, want 2", n)
	}
	for _, c := range []*websocket.Conn{byOld, byFirst} {
		if code, text := closeFrame(t, c, 30*time.Second); code != core.CloseAuthFailed || text != "Credential revoked" {
			t.Fatalf("closed %d %q, want 4001 Credential revoked", code, text)
		}
	}
	sendJSON(t, byNew, map[string]any{"role": "user", "content": "still here"})
	if got := textOf(t, readFrame(t, byNew)); got != "still here" {
		t.Fatalf("surviving socket: %q", got)
	}
}
