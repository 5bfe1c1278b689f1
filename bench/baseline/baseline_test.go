package baseline

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

const (
	testKey    = "k3y-for-tests"
	testSecret = "a-baseline-hs256-secret-of-32-bytes!"
)

func newTestServer(t *testing.T) *httptest.Server {
	t.Helper()
	s, err := New(Options{Keys: []string{"other", testKey}, JWTSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

func dial(t *testing.T, ts *httptest.Server, path string, h http.Header) (*websocket.Conn, int, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+path, h)
	code := 0
	if resp != nil {
		code = resp.StatusCode
	}
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, code, err
}

type event struct {
	ID        string `json:"id"`
	Timestamp string `json:"timestamp"`
	Source    string `json:"source"`
	ParentID  string `json:"parent_id"`
	Kind      string `json:"kind"`
	Key       string `json:"key"`
	LLM       struct {
		Role    string `json:"role"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"llm_message"`
}

func readEvent(t *testing.T, c *websocket.Conn) event {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var e event
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("frame is not JSON: %s", b)
	}
	return e
}

func token(t *testing.T, secret string, claims jwtlib.MapClaims) string {
	t.Helper()
	s, err := jwtlib.NewWithClaims(jwtlib.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuth(t *testing.T) {
	ts := newTestServer(t)
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name   string
		query  string
		header http.Header
		want   int
	}{
		{"query key", "?session_api_key=" + testKey, nil, 101},
		{"header key", "", http.Header{"X-Session-Api-Key": {testKey}}, 101},
		{"bearer key", "", http.Header{"Authorization": {"bearer " + testKey}}, 101},
		{"bearer jwt", "", http.Header{"Authorization": {"Bearer " + token(t, testSecret, jwtlib.MapClaims{"sub": "a", "exp": exp})}}, 101},
		{"no credential", "", nil, 401},
		{"wrong query key wins over right header", "?session_api_key=nope", http.Header{"X-Session-Api-Key": {testKey}}, 401},
		{"wrong key", "", http.Header{"X-Session-Api-Key": {"nope"}}, 401},
		{"jwt without sub", "", http.Header{"Authorization": {"Bearer " + token(t, testSecret, jwtlib.MapClaims{"exp": exp})}}, 401},
		{"expired jwt", "", http.Header{"Authorization": {"Bearer " + token(t, testSecret, jwtlib.MapClaims{"sub": "a", "exp": exp - 7200})}}, 401},
		{"jwt with another secret", "", http.Header{"Authorization": {"Bearer " + token(t, testSecret+"x", jwtlib.MapClaims{"sub": "a", "exp": exp})}}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, code, err := dial(t, ts, "/sockets/events/conv"+tt.query, tt.header)
			if code != tt.want {
				t.Fatalf("status = %d (%v), want %d", code, err, tt.want)
			}
			if tt.want == 101 {
				if e := readEvent(t, c); e.Kind != "ConversationStateUpdateEvent" || e.Key != "full_state" {
					t.Fatalf("first frame = %+v, want full_state", e)
				}
			}
		})
	}
	if _, code, _ := dial(t, ts, "/elsewhere?session_api_key="+testKey, nil); code != 404 {
		t.Errorf("other path: status %d, want 404", code)
	}
}

// A user message reaches every socket on its path, the sender included, as
// a MessageEvent; other paths and malformed frames get nothing.
func TestBroadcast(t *testing.T) {
	ts := newTestServer(t)
	h := http.Header{"X-Session-Api-Key": {testKey}}
	var same []*websocket.Conn
	for range 3 {
		c, _, err := dial(t, ts, "/sockets/events/a", h)
		if err != nil {
			t.Fatal(err)
		}
		readEvent(t, c)
		same = append(same, c)
	}
	other, _, err := dial(t, ts, "/sockets/events/b", h)
	if err != nil {
		t.Fatal(err)
	}
	readEvent(t, other)

	for _, f := range []string{`not json`, `{"role":"agent","content":"x"}`, `{"type":"auth"}`} {
		if err := same[1].WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	text := `hello "quoted" \ and unicode é`
	msg, _ := json.Marshal(map[string]string{"role": "user", "content": text})
	if err := same[1].WriteMessage(websocket.TextMessage, msg); err != nil {
		t.Fatal(err)
	}
	var first string
	for i, c := range same {
		e := readEvent(t, c)
		if e.Kind != "MessageEvent" || e.Source != "user" || e.ID == "" || e.Timestamp == "" || e.ParentID != "" ||
			e.LLM.Role != "user" || len(e.LLM.Content) != 1 || e.LLM.Content[0].Text != text {
			t.Errorf("socket %d got %+v, want the MessageEvent with %q and no parent", i, e, text)
		}
		first = e.ID
	}
	// The next event names the first as its parent, as agent-server's do.
	if err := same[0].WriteMessage(websocket.TextMessage, msg); err != nil {
		t.Fatal(err)
	}
	for i, c := range same {
		if e := readEvent(t, c); e.ParentID != first || e.ID == first {
			t.Errorf("socket %d: second event %+v, want parent_id %q", i, e, first)
		}
	}
	_ = other.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, b, err := other.ReadMessage(); err == nil {
		t.Errorf("socket on another path got %s", b)
	}
}

// Frames queued while a flush is in progress go out together, in order.
func TestQueueOrderAndLimit(t *testing.T) {
	ts := newTestServer(t)
	h := http.Header{"X-Session-Api-Key": {testKey}}
	pub, _, err := dial(t, ts, "/sockets/events/q", h)
	if err != nil {
		t.Fatal(err)
	}
	readEvent(t, pub)
	const n = 500
	for i := range n {
		msg, _ := json.Marshal(map[string]string{"role": "user", "content": strings.Repeat("x", i%7) + "|" + string(rune('a'+i%26))})
		if err := pub.WriteMessage(websocket.TextMessage, msg); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		e := readEvent(t, pub)
		want := strings.Repeat("x", i%7) + "|" + string(rune('a'+i%26))
		if got := e.LLM.Content[0].Text; got != want {
			t.Fatalf("message %d = %q, want %q", i, got, want)
		}
	}
}

func TestFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := frame(make([]byte, n))
		hdr := len(f) - n
		var want int
		switch {
		case n < 126:
			want = 2
		case n <= 0xFFFF:
			want = 4
		default:
			want = 10
		}
		if hdr != want || f[0] != 0x81 {
			t.Errorf("frame(%d bytes): header %d bytes, first byte %#x; want %d, 0x81", n, hdr, f[0], want)
		}
	}
}

func TestQueueLimitDrops(t *testing.T) {
	c := &conn{limit: 100, nc: nopConn{}, flushing: true} // a flush "in progress" that never drains
	c.push(make([]byte, 60))
	c.push(make([]byte, 60))
	if !c.dead {
		t.Fatal("queue past its limit should drop the connection")
	}
}

// nopConn is a net.Conn whose Close does nothing.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

// A socket that comes back with after_id gets, after full_state, exactly the
// events it missed, then live ones; an id the log does not hold gets an
// unknown_event_id error.
func TestAfterIDReplay(t *testing.T) {
	s, err := New(Options{Keys: []string{testKey}, LogSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	h := http.Header{"X-Session-Api-Key": {testKey}}
	pub, _, err := dial(t, ts, "/sockets/events/r", h)
	if err != nil {
		t.Fatal(err)
	}
	readEvent(t, pub)
	say := func(text string) event {
		t.Helper()
		msg, _ := json.Marshal(map[string]string{"role": "user", "content": text})
		if err := pub.WriteMessage(websocket.TextMessage, msg); err != nil {
			t.Fatal(err)
		}
		return readEvent(t, pub)
	}
	var ids []string
	for _, text := range []string{"a", "b", "c", "d", "e"} {
		ids = append(ids, say(text).ID)
	}
	texts := func(c *websocket.Conn, n int) []string {
		t.Helper()
		var out []string
		for range n {
			e := readEvent(t, c)
			if e.Kind != "MessageEvent" {
				t.Fatalf("got %+v, want a MessageEvent", e)
			}
			out = append(out, e.LLM.Content[0].Text)
		}
		return out
	}
	resume := func(after string) *websocket.Conn {
		t.Helper()
		c, _, err := dial(t, ts, "/sockets/events/r?after_id="+after, h)
		if err != nil {
			t.Fatal(err)
		}
		if e := readEvent(t, c); e.Key != "full_state" {
			t.Fatalf("first frame %+v, want full_state", e)
		}
		return c
	}
	// The log keeps the last 4 events: b, c, d, e.
	c := resume(ids[2])
	if got := texts(c, 2); strings.Join(got, ",") != "d,e" {
		t.Errorf("after c: replayed %v, want d, e", got)
	}
	f := say("f")
	if got := texts(c, 1); got[0] != "f" {
		t.Errorf("after the replay: %v, want the live f", got)
	}
	c = resume(f.ID)
	say("g")
	if got := texts(c, 1); got[0] != "g" {
		t.Errorf("after the last event: %v, want only the live g", got)
	}
	// "a" has fallen out of the log.
	c = resume(ids[0])
	if e := readEvent(t, c); e.Kind != "ServerErrorEvent" {
		t.Errorf("after an id out of the log: %+v, want a ServerErrorEvent", e)
	}
}
