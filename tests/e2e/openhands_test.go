package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/tests/testbin"
)

// These tests drive agent-server the way the OpenHands SDK's
// RemoteConversation does (openhands-sdk 1.43.1: the same REST calls, the
// same socket handshake with first-message auth), with agent-echo as the
// conversation's runtime, and check every answer against the shapes of
// upstream's models in testdata/openhands.

const (
	ohClientKey  = "oh-client-key"
	ohRuntimeKey = "oh-runtime-key"
	// leakMarker is in every secret the tests send; it must never come back.
	leakMarker = "DO-NOT-LEAK"
)

// ohConfig has a client key and a runtime key.
const ohConfig = "auth:\n  keys: [" + ohClientKey + "]\n  runtime_keys: [" + ohRuntimeKey + "]\n" +
	"conversations:\n  runtime_wait: 20s\n"

// sdk is an OpenHands client: REST with X-Session-API-Key, every answer
// kept so the test can check that no secret came back.
type sdk struct {
	t    *testing.T
	s    *server
	key  string
	mu   sync.Mutex
	seen [][]byte
}

func (c *sdk) call(method, path string, body any) (int, []byte) {
	c.t.Helper()
	code, b := c.s.request(c.t, method, path, body, "X-Session-API-Key", c.key)
	c.keep(b)
	return code, b
}

// must makes a call that must answer want, and returns the body.
func (c *sdk) must(want int, method, path string, body any) []byte {
	c.t.Helper()
	code, b := c.call(method, path, body)
	if code != want {
		c.t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
	}
	return b
}

func (c *sdk) keep(b []byte) {
	c.mu.Lock()
	c.seen = append(c.seen, bytes.Clone(b))
	c.mu.Unlock()
}

// noLeak fails if any answer, frame or log holds a secret.
func (c *sdk) noLeak(logs ...string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.seen {
		if bytes.Contains(b, []byte(leakMarker)) {
			c.t.Errorf("a client received a secret: %.300s", b)
		}
	}
	for i, l := range logs {
		if strings.Contains(l, leakMarker) {
			c.t.Errorf("log %d holds a secret", i)
		}
	}
}

// stream is a socket the way the SDK's WebSocketCallbackClient holds it:
// every frame is collected; the test waits for the ones it expects.
type stream struct {
	t      *testing.T
	c      *sdk
	conn   *websocket.Conn
	frames chan map[string]any
	all    []map[string]any // every frame, for the shape checks
	mu     sync.Mutex
}

// attach opens /sockets/events/{id} with no credential in the handshake and
// the auth frame first, as the SDK does, and checks the ready signal: a
// full_state ConversationStateUpdateEvent.
func (c *sdk) attach(id string) (*stream, map[string]any) {
	c.t.Helper()
	conn, _, err := c.s.dial(c.t, "/sockets/events/"+id, nil)
	if err != nil {
		c.t.Fatalf("dial: %v", err)
	}
	conn.SetReadLimit(sdkFrameLimit)
	send(c.t, conn, map[string]string{"type": "auth", "session_api_key": c.key})
	st := &stream{t: c.t, c: c, conn: conn, frames: make(chan map[string]any, 1024)}
	go st.read()
	first := st.next("the ready signal", func(f map[string]any) bool { return true })
	if first["kind"] != "ConversationStateUpdateEvent" || first["key"] != "full_state" {
		c.t.Fatalf("first frame = %v, want the full_state event", first)
	}
	return st, first
}

func (st *stream) read() {
	defer close(st.frames)
	for {
		_, b, err := st.conn.ReadMessage()
		if err != nil {
			return
		}
		st.c.keep(b)
		var f map[string]any
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		st.mu.Lock()
		st.all = append(st.all, f)
		st.mu.Unlock()
		st.frames <- f
	}
}

// next returns the first frame for which match holds, within 30 s.
func (st *stream) next(what string, match func(map[string]any) bool) map[string]any {
	st.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case f, ok := <-st.frames:
			if !ok {
				st.t.Fatalf("socket closed while waiting for %s", what)
			}
			if match(f) {
				return f
			}
		case <-deadline:
			st.t.Fatalf("no %s within 30s", what)
		}
	}
}

// none fails if a frame matching match arrives within d.
func (st *stream) none(d time.Duration, what string, match func(map[string]any) bool) {
	st.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case f, ok := <-st.frames:
			if ok && match(f) {
				st.t.Fatalf("unexpected %s: %v", what, f)
			}
		case <-deadline:
			return
		}
	}
}

// Frame matchers.
func stateKey(key string) func(map[string]any) bool {
	return func(f map[string]any) bool { return f["kind"] == "ConversationStateUpdateEvent" && f["key"] == key }
}

func execStatus(s string) func(map[string]any) bool {
	return func(f map[string]any) bool { return stateKey("execution_status")(f) && f["value"] == s }
}

// fullState matches the snapshot whose execution_status is s: what the
// SDK's blocking run() waits for.
func fullState(s string) func(map[string]any) bool {
	return func(f map[string]any) bool {
		v, _ := f["value"].(map[string]any)
		return stateKey("full_state")(f) && v["execution_status"] == s
	}
}

func message(source, text string) func(map[string]any) bool {
	return func(f map[string]any) bool {
		if f["kind"] != "MessageEvent" || f["source"] != source {
			return false
		}
		m, _ := f["llm_message"].(map[string]any)
		parts, _ := m["content"].([]any)
		if len(parts) == 0 {
			return false
		}
		p, _ := parts[0].(map[string]any)
		return p["text"] == text
	}
}

func kind(k string) func(map[string]any) bool {
	return func(f map[string]any) bool { return f["kind"] == k }
}

// startEcho runs agent-echo against s with the runtime key.
func startEcho(t *testing.T, s *server, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "agent-echo"), append([]string{"-server", "http://" + s.addr}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "AGENT_RUNTIME_KEY=" + ohRuntimeKey}
	var log testbin.Buffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("agent-echo log:\n%s", log.String())
		}
		if strings.Contains(log.String(), leakMarker) {
			t.Error("agent-echo logged a secret")
		}
	})
	return cmd
}

// fixture reads testdata/openhands/name.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "openhands", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// conforms checks got against the example of an upstream model: every key
// of the example is there (unless optional) with the same JSON type (a null
// in the example, or in got for an optional key, takes any), and got has no
// key the example lacks.
func conforms(t *testing.T, what string, example, got map[string]any, optional []string) {
	t.Helper()
	for k, want := range example {
		v, ok := got[k]
		switch {
		case !ok && !slices.Contains(optional, k):
			t.Errorf("%s: %q is missing", what, k)
		case ok && want != nil && jsonType(v) != jsonType(want) && !(v == nil && slices.Contains(optional, k)):
			t.Errorf("%s: %q is %s (%v), upstream's is %s", what, k, jsonType(v), v, jsonType(want))
		}
	}
	for k := range got {
		if _, ok := example[k]; !ok {
			t.Errorf("%s: %q is not a field of upstream's model", what, k)
		}
	}
}

// shapes are the fixtures the answers are checked against.
type shapes struct {
	info      map[string]any
	fullState map[string]any
	fullOpt   []string
	events    map[string]struct {
		Required []string       `json:"required"`
		Example  map[string]any `json:"example"`
	}
}

func loadShapes(t *testing.T) *shapes {
	t.Helper()
	sh := &shapes{}
	var fs struct {
		Optional []string       `json:"optional_keys"`
		Value    map[string]any `json:"value"`
	}
	for name, v := range map[string]any{"conversation_info.json": &sh.info, "full_state.json": &fs, "events.json": &sh.events} {
		if err := json.Unmarshal(fixture(t, name), v); err != nil {
			t.Fatalf("fixture %s: %v", name, err)
		}
	}
	sh.fullState, sh.fullOpt = fs.Value, fs.Optional
	return sh
}

// checkInfo checks a ConversationInfo answer and returns it.
func (sh *shapes) checkInfo(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var info map[string]any
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatalf("conversation info is not JSON: %s", body)
	}
	conforms(t, "ConversationInfo", sh.info, info, nil)
	// What RemoteState raises without (execution_status, confirmation_policy,
	// agent, workspace, persistence_dir) and reads (stats, max_iterations, ...).
	for _, k := range []string{"execution_status", "confirmation_policy", "agent", "workspace", "persistence_dir", "stats",
		"max_iterations", "stuck_detection", "secret_registry"} {
		if info[k] == nil {
			t.Errorf("ConversationInfo: %q is null; the SDK needs it", k)
		}
	}
	return info
}

// checkEvent checks one event frame of a kind the fixtures have.
func (sh *shapes) checkEvent(t *testing.T, f map[string]any) {
	t.Helper()
	k, _ := f["kind"].(string)
	if k == "ConversationStateUpdateEvent" && f["key"] == "full_state" {
		conforms(t, "full_state", sh.fullState, f["value"].(map[string]any), sh.fullOpt)
	}
	spec, ok := sh.events[k]
	if !ok {
		return
	}
	var optional []string
	for key := range spec.Example {
		if !slices.Contains(spec.Required, key) {
			optional = append(optional, key)
		}
	}
	conforms(t, k, spec.Example, f, optional)
}

// TestOpenHandsClientFlow is RemoteConversation's life against agent-server
// with agent-echo as the runtime: create with a full agent and workspace,
// attach, set secrets and the security analyzer, send a message and run,
// get the runtime's answer, pause and interrupt runs, ask the agent, read
// the state back; every answer has upstream's shape and no secret comes
// back.
func TestOpenHandsClientFlow(t *testing.T) {
	s := startServer(t, ohConfig)
	sh := loadShapes(t)
	c := &sdk{t: t, s: s, key: ohClientKey}
	// Discovery mode: the runtime finds the conversation on its own, which
	// the first run waits for (conversations.runtime_wait).
	startEcho(t, s, "-poll", "100ms", "-delay", "500ms")

	// Create, as RemoteConversation does: the agent with its secrets exposed.
	body := c.must(http.StatusCreated, "POST", "/api/conversations", fixture(t, "start_conversation.json"))
	created := sh.checkInfo(t, body)
	id := created["id"].(string)
	conv := "/api/conversations/" + id

	// Attach: GET the conversation (it exists), then the socket.
	info := sh.checkInfo(t, c.must(http.StatusOK, "GET", conv, nil))
	agent := info["agent"].(map[string]any)
	llm := agent["llm"].(map[string]any)
	if agent["kind"] != "Agent" || llm["model"] != "litellm_proxy/anthropic/claude-sonnet-4-5" || llm["api_key"] != nil {
		t.Errorf("agent = %v, want it as sent with api_key null", agent)
	}
	if ctx, _ := agent["agent_context"].(map[string]any); len(ctx["skills"].([]any)) != 0 {
		t.Errorf("agent_context.skills = %v, want them trimmed as upstream trims them", ctx["skills"])
	}
	if info["max_iterations"] != 500.0 || info["stuck_detection"] != true || info["execution_status"] != "idle" ||
		info["persistence_dir"] != "workspace/conversations/"+strings.ReplaceAll(id, "-", "") ||
		info["tags"].(map[string]any)["team"] != "docs" {
		t.Errorf("conversation info = %v", info)
	}
	withSkills := c.must(http.StatusOK, "GET", conv+"?include_skills=true", nil)
	if !bytes.Contains(withSkills, []byte(`"Use pytest."`)) {
		t.Errorf("include_skills=true: skills missing from %s", withSkills)
	}
	st, ready := c.attach(id)
	sh.checkEvent(t, ready)
	v := ready["value"].(map[string]any)
	if v["agent"].(map[string]any)["llm"].(map[string]any)["api_key"] != "**********" {
		t.Errorf("full_state agent api_key = %v, want it redacted", v["agent"])
	}
	var page struct {
		Items      []map[string]any `json:"items"`
		NextPageID *string          `json:"next_page_id"`
	}
	if err := json.Unmarshal(c.must(http.StatusOK, "GET", conv+"/events/search?limit=100", nil), &page); err != nil || len(page.Items) != 0 {
		t.Fatalf("reconcile of a new conversation: %+v %v", page, err)
	}

	// Settings.
	c.must(http.StatusOK, "POST", conv+"/secrets", map[string]any{"secrets": map[string]any{"GITHUB_TOKEN": "ghp-" + leakMarker}})
	reg := st.next("secret_registry update", stateKey("secret_registry"))
	if src := reg["value"].(map[string]any)["secret_sources"].(map[string]any)["GITHUB_TOKEN"].(map[string]any); src["value"] != "**********" {
		t.Errorf("secret_registry update = %v", reg)
	}
	c.must(http.StatusOK, "POST", conv+"/security_analyzer", map[string]any{"security_analyzer": map[string]any{"kind": "LLMSecurityAnalyzer"}})
	if f := st.next("security_analyzer update", stateKey("security_analyzer")); f["value"].(map[string]any)["kind"] != "LLMSecurityAnalyzer" {
		t.Errorf("security_analyzer update = %v", f)
	}
	c.must(http.StatusOK, "POST", conv+"/security_analyzer", map[string]any{"security_analyzer": nil})
	if f := st.next("security_analyzer cleared", stateKey("security_analyzer")); f["value"] != nil {
		t.Errorf("cleared analyzer = %v, want no value, as upstream sends it", f)
	}
	c.must(http.StatusOK, "POST", conv+"/confirmation_policy", map[string]any{"policy": map[string]any{"kind": "NeverConfirm"}})
	if code, b := c.call("POST", conv+"/confirmation_policy", map[string]any{"policy": map[string]any{"kind": "Sometimes"}}); code != http.StatusBadRequest {
		t.Errorf("bad policy: %d %s", code, b)
	}

	// A message, then a blocking run: the SDK waits for a full_state that is
	// not running.
	c.must(http.StatusOK, "POST", conv+"/events", map[string]any{"role": "user", "content": []map[string]string{{"type": "text", "text": "Flip a coin!"}}, "run": false})
	st.next("the user's message", message("user", "Flip a coin!"))
	c.must(http.StatusOK, "POST", conv+"/run", nil)
	st.next("running", execStatus("running"))
	st.next("the runtime's answer", message("agent", "echo: Flip a coin!"))
	st.next("finished", execStatus("finished"))
	st.next("full_state after the run", fullState("finished"))
	info = sh.checkInfo(t, c.must(http.StatusOK, "GET", conv, nil))
	if info["execution_status"] != "finished" || info["title"] != "Flip a coin!" {
		t.Errorf("after the run: status %v, title %v; want finished and the autotitle", info["execution_status"], info["title"])
	}

	// Pause between two answers.
	for _, m := range []string{"one", "two", "three"} {
		c.must(http.StatusOK, "POST", conv+"/events", map[string]any{"role": "user", "content": []map[string]string{{"type": "text", "text": m}}})
	}
	c.must(http.StatusOK, "POST", conv+"/run", nil)
	if code, b := c.call("POST", conv+"/run", nil); code != http.StatusConflict || !strings.Contains(string(b), "Conversation already running") {
		t.Errorf("a second run: %d %s, want upstream's 409", code, b)
	}
	st.next("answer one", message("agent", "echo: one"))
	c.must(http.StatusOK, "POST", conv+"/pause", nil)
	st.next("PauseEvent", kind("PauseEvent"))
	st.next("full_state paused", fullState("paused"))
	st.none(1200*time.Millisecond, "answer after the pause", message("agent", "echo: two"))

	// Interrupt in the middle of an answer.
	c.must(http.StatusOK, "POST", conv+"/run", nil)
	st.next("answer two", message("agent", "echo: two"))
	c.must(http.StatusOK, "POST", conv+"/interrupt", nil)
	st.next("InterruptEvent", kind("InterruptEvent"))
	st.next("full_state interrupted", fullState("paused"))
	st.none(1200*time.Millisecond, "answer after the interrupt", message("agent", "echo: three"))
	if s := sh.checkInfo(t, c.must(http.StatusOK, "GET", conv, nil))["execution_status"]; s != "paused" {
		t.Errorf("status after interrupt = %v", s)
	}

	// Run to the end.
	c.must(http.StatusOK, "POST", conv+"/run", nil)
	st.next("answer three", message("agent", "echo: three"))
	st.next("full_state finished", fullState("finished"))

	// What the runtime answers.
	if b := c.must(http.StatusOK, "POST", conv+"/ask_agent", map[string]string{"question": "heads or tails?"}); string(b) != `{"response":"echo: heads or tails?"}` {
		t.Errorf("ask_agent = %s", b)
	}
	c.must(http.StatusOK, "POST", conv+"/condense", nil)
	if code, b := c.call("POST", conv+"/load_plugin", map[string]string{"plugin_ref": "github:x/y"}); code != http.StatusBadRequest || !strings.Contains(string(b), "does not support load_plugin") {
		t.Errorf("load_plugin = %d %s, want the runtime's 400", code, b)
	}
	if b := c.must(http.StatusOK, "GET", conv+"/agent_final_response", nil); string(b) != `{"response":"echo: three"}` {
		t.Errorf("agent_final_response = %s", b)
	}
	c.must(http.StatusOK, "PATCH", conv, map[string]any{"title": " Coin ", "tags": map[string]string{"team": "coins"}})
	st.next("tags update", stateKey("tags"))
	if code, b := c.call("PATCH", "/api/conversations/"+strings.Repeat("0", 8)+"-0000-4000-8000-000000000000", map[string]any{"title": "x"}); code != http.StatusOK || string(b) != `{"success":false}` {
		t.Errorf("PATCH of an unknown conversation = %d %s, want upstream's 200 {\"success\": false}", code, b)
	}
	if code, _ := c.call("POST", "/api/conversations/"+strings.Repeat("0", 8)+"-0000-4000-8000-000000000000/pause", nil); code != http.StatusBadRequest {
		t.Errorf("pause of an unknown conversation = %d, want upstream's 400", code)
	}

	// Read the state back as RemoteState.refresh_from_server does.
	info = sh.checkInfo(t, c.must(http.StatusOK, "GET", conv, nil))
	if info["title"] != "Coin" || info["execution_status"] != "finished" || info["security_analyzer"] != nil ||
		info["confirmation_policy"].(map[string]any)["kind"] != "NeverConfirm" {
		t.Errorf("state read back = %v", info)
	}
	if src := info["secret_registry"].(map[string]any)["secret_sources"].(map[string]any)["GITHUB_TOKEN"].(map[string]any); src["value"] != nil || src["kind"] != "StaticSecret" {
		t.Errorf("secret in the info = %v, want upstream's null value", src)
	}

	// Reconcile as the SDK does: every page, every event of a known shape.
	var items []map[string]any
	next := ""
	for {
		path := conv + "/events/search?limit=7"
		if next != "" {
			path += "&page_id=" + next
		}
		page.Items, page.NextPageID = nil, nil
		if err := json.Unmarshal(c.must(http.StatusOK, "GET", path, nil), &page); err != nil {
			t.Fatal(err)
		}
		items = append(items, page.Items...)
		if page.NextPageID == nil {
			break
		}
		next = *page.NextPageID
	}
	counts := map[string]int{}
	for _, e := range items {
		sh.checkEvent(t, e)
		counts[e["kind"].(string)+"/"+e["source"].(string)]++
	}
	if counts["MessageEvent/user"] != 4 || counts["MessageEvent/agent"] != 4 || counts["PauseEvent/user"] != 1 || counts["InterruptEvent/user"] != 1 {
		t.Errorf("the log holds %v; want 4 user and 4 agent messages, a pause and an interrupt", counts)
	}
	st.mu.Lock()
	for _, f := range st.all {
		sh.checkEvent(t, f)
	}
	st.mu.Unlock()
	_ = st.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c.noLeak(s.Log())
}

// A client's credential is refused on the runtime socket and may not post
// agent events; a runtime's events are checked against their model, and an
// unknown kind or an oversize event is refused with nothing stored.
func TestRuntimeAuthorizationAndValidation(t *testing.T) {
	s := startServer(t, ohConfig+"limits:\n  max_event_bytes: 4096\n")
	c := &sdk{t: t, s: s, key: ohClientKey}
	body := c.must(http.StatusCreated, "POST", "/api/conversations", map[string]any{
		"agent": map[string]any{"llm": map[string]any{"model": "m", "api_key": "sk-" + leakMarker}}, "workspace": map[string]any{"working_dir": "w"},
		"secrets": map[string]any{"TOKEN": map[string]any{"kind": "StaticSecret", "value": "t-" + leakMarker}}})
	var created struct{ ID string }
	_ = json.Unmarshal(body, &created)
	path := "/sockets/runtime/" + created.ID

	for _, tt := range []struct {
		name string
		h    http.Header
		want int
	}{
		{"no credential", nil, http.StatusUnauthorized},
		{"wrong key", hdr("X-Session-API-Key", "nope"), http.StatusUnauthorized},
		{"client key", hdr("X-Session-API-Key", ohClientKey), http.StatusForbidden},
	} {
		if _, resp, err := s.dial(t, path, tt.h); err == nil || resp == nil || resp.StatusCode != tt.want {
			t.Errorf("%s on the runtime socket: %v, want %d", tt.name, err, tt.want)
		}
	}
	if code, b := c.call("POST", "/api/conversations/"+created.ID+"/events", map[string]any{"kind": "MessageEvent", "source": "agent", "llm_message": map[string]any{"role": "assistant", "content": "hi"}}); code != http.StatusForbidden {
		t.Errorf("a client posting an agent event: %d %s, want 403", code, b)
	}
	rt := &sdk{t: t, s: s, key: ohRuntimeKey}
	if code, b := rt.call("POST", "/api/conversations/"+created.ID+"/events", map[string]any{"source": "agent", "kind": "ActionEvent"}); code != http.StatusBadRequest || !strings.Contains(string(b), "ActionEvent needs the field") {
		t.Errorf("a runtime posting an ActionEvent without its fields: %d %s, want 400", code, b)
	}

	conn, _, err := s.dial(t, path+"?resend_mode=all", hdr("X-Session-API-Key", ohRuntimeKey))
	if err != nil {
		t.Fatalf("runtime key on the runtime socket: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, first, err := conn.ReadMessage()
	if err != nil || !bytes.Contains(first, []byte(`"type":"state"`)) || !bytes.Contains(first, []byte(`"t-`+leakMarker+`"`)) || !bytes.Contains(first, []byte(`"sk-`+leakMarker+`"`)) {
		t.Fatalf("runtime's first frame = %.300s %v, want the state with the secrets it needs", first, err)
	}
	answer := func(frame string) map[string]any {
		t.Helper()
		if err := conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			var f map[string]any
			_ = json.Unmarshal(b, &f)
			if f["type"] == "published" || f["type"] == "error" {
				return f
			}
		}
	}
	if f := answer(`{"type":"publish","ref":"u","event":{"kind":"ThoughtEvent","source":"agent"}}`); f["code"] != "unknown_kind" || f["ref"] != "u" {
		t.Errorf("unknown kind: %v", f)
	}
	big := strings.Repeat("x", 5000)
	if f := answer(`{"type":"publish","ref":"b","event":{"kind":"MessageEvent","source":"agent","llm_message":{"role":"assistant","content":"` + big + `"}}}`); f["code"] != "event_too_large" {
		t.Errorf("oversize event: %v", f)
	}
	if f := answer(`{"type":"publish","ref":"m","event":{"kind":"MessageEvent","source":"agent","llm_message":{"role":"assistant","content":[{"type":"text","text":"ok"}]}}}`); f["type"] != "published" || f["seq"] != 1.0 {
		t.Errorf("a valid event: %v, want published as seq 1", f)
	}
	if b := c.must(http.StatusOK, "GET", "/api/conversations/"+created.ID+"/events/count", nil); string(b) != "1" {
		t.Errorf("events stored = %s, want only the valid one", b)
	}
	c.noLeak(s.Log())
}

// agent-echo killed mid-run: the conversation reports the lost run (a
// ConversationErrorEvent and execution_status error), its clients stay
// attached, and a new agent-echo picks the conversation up.
func TestEchoKilledMidRun(t *testing.T) {
	s := startServer(t, ohConfig)
	c := &sdk{t: t, s: s, key: ohClientKey}
	var created struct{ ID string }
	_ = json.Unmarshal(c.must(http.StatusCreated, "POST", "/api/conversations", fixture(t, "start_conversation.json")), &created)
	conv := "/api/conversations/" + created.ID
	st, _ := c.attach(created.ID)
	echo := startEcho(t, s, "-conversation", created.ID, "-delay", "20s")
	c.must(http.StatusOK, "POST", conv+"/events", map[string]any{"role": "user", "content": "first"})
	c.must(http.StatusOK, "POST", conv+"/run", nil)
	st.next("running", execStatus("running"))

	if err := echo.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if f := st.next("the lost run", kind("ConversationErrorEvent")); f["code"] != "RuntimeDisconnected" || f["source"] != "environment" {
		t.Errorf("error event = %v", f)
	}
	st.next("status error", execStatus("error"))
	st.next("full_state after the lost run", fullState("error"))
	// The client is still attached.
	c.must(http.StatusOK, "POST", conv+"/events", map[string]any{"role": "user", "content": "second"})
	st.next("the next message", message("user", "second"))

	startEcho(t, s, "-conversation", created.ID)
	c.must(http.StatusOK, "POST", conv+"/run", nil) // waits for the new runtime to attach
	st.next("answer first", message("agent", "echo: first"))
	st.next("answer second", message("agent", "echo: second"))
	st.next("full_state finished", fullState("finished"))
	c.noLeak(s.Log())
}

// agent-echo reconnects with after_id when its socket drops (here, the
// server restarts on the same address) and answers each message once.
func TestEchoReconnectsAfterID(t *testing.T) {
	s := startServer(t, ohConfig)
	c := &sdk{t: t, s: s, key: ohClientKey}
	var created struct{ ID string }
	_ = json.Unmarshal(c.must(http.StatusCreated, "POST", "/api/conversations", map[string]any{"workspace": map[string]any{"working_dir": "w"}}), &created)
	conv := "/api/conversations/" + created.ID
	st, _ := c.attach(created.ID)
	startEcho(t, s, "-conversation", created.ID)
	c.must(http.StatusOK, "POST", conv+"/events", map[string]any{"role": "user", "content": "before", "run": true})
	st.next("answer before", message("agent", "echo: before"))
	st.next("finished", fullState("finished"))

	addr := s.addr
	s.kill()
	s2 := launchAt(t, filepath.Dir(s.config), s.config, s.cmd.Env, addr)
	c.s = s2
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s2.Log(), "after_id=") {
		if time.Now().After(deadline) {
			t.Fatalf("agent-echo did not reconnect with after_id:\n%s", s2.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st2, _ := c.attach(created.ID)
	c.must(http.StatusOK, "POST", conv+"/events", map[string]any{"role": "user", "content": "after", "run": true})
	st2.next("answer after", message("agent", "echo: after"))
	st2.next("finished", fullState("finished"))
	var page struct {
		Items []map[string]any `json:"items"`
	}
	_ = json.Unmarshal(c.must(http.StatusOK, "GET", conv+"/events/search?limit=100&kind=MessageEvent", nil), &page)
	agents := 0
	for _, e := range page.Items {
		if e["source"] == "agent" {
			agents++
		}
	}
	if agents != 2 {
		t.Errorf("%d agent messages for 2 user messages, want each answered once", agents)
	}
}
