package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// sdkFrameLimit is the OpenHands SDK client's frame limit: the websockets
// library's default max_size, 1 MiB.
const sdkFrameLimit = 1 << 20

// Every event reaches a client whose frame limit is 1 MiB, as the OpenHands
// SDK's is: a message of '<' is not inflated by escaping, a message whose
// event is exactly at limits.max_event_bytes arrives whole, and one byte
// more is refused with 413 and not stored.
func TestEventsFitTheSDKFrameLimit(t *testing.T) {
	const key = "frames-key"
	s := startServer(t, "auth:\n  keys: ["+key+"]\n")
	id := s.createConversation(t, key)
	c, _, err := s.dial(t, "/sockets/events/"+id, hdr("X-Session-API-Key", key))
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(sdkFrameLimit)
	mustReady(t, c)

	post := func(text string) (int, []byte) {
		// Written by hand: json.Marshal would send each '<' as \u003c.
		body := []byte(`{"role":"user","content":"` + text + `"}`)
		return s.request(t, "POST", "/api/conversations/"+id+"/events", body, "X-Session-API-Key", key)
	}
	next := func() []byte {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return b
	}
	text := func(frame []byte) string {
		var e event
		if err := json.Unmarshal(frame, &e); err != nil {
			t.Fatalf("frame is not JSON: %.200s", frame)
		}
		return e.text()
	}

	// 180 KB of '<' was a 1,080,215-byte frame when '<' became \u003c.
	angles := strings.Repeat("<", 180_000)
	if code, body := post(angles); code != http.StatusOK {
		t.Fatalf("post '<' message: %d %s", code, body)
	}
	frame := next()
	if text(frame) != angles {
		t.Fatal("the '<' message arrived altered")
	}
	if len(frame) > 180_000+1024 {
		t.Errorf("the '<' message became a %d-byte frame", len(frame))
	}

	// The envelope's size does not depend on the text: measure it once.
	if code, _ := post("x"); code != http.StatusOK {
		t.Fatal("post x")
	}
	overhead := len(next()) - 1
	exact := strings.Repeat("y", sdkFrameLimit-overhead)
	if code, body := post(exact); code != http.StatusOK {
		t.Fatalf("post a message at the limit: %d %s", code, body)
	}
	if frame := next(); len(frame) != sdkFrameLimit || text(frame) != exact {
		t.Errorf("the message at the limit arrived as %d bytes, want exactly %d", len(frame), sdkFrameLimit)
	}
	code, body := post(exact + "y")
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), strconv.Itoa(sdkFrameLimit+1)+" bytes") {
		t.Errorf("one byte over the limit: %d %s, want 413 naming the size", code, body)
	}
	if code, body := s.request(t, "GET", "/api/conversations/"+id+"/events/count", nil, "X-Session-API-Key", key); code != http.StatusOK || string(body) != "3" {
		t.Errorf("events stored: %d %s, want 3 (the refused one is not)", code, body)
	}
	// The socket is still open and still gets events.
	if code, _ := post("after"); code != http.StatusOK || text(next()) != "after" {
		t.Error("no event after the refused one")
	}
}

// On a socket, an oversize message earns that client a ServerErrorEvent
// event_too_large; nothing is stored and the socket stays open.
func TestOversizeFrameOnASocket(t *testing.T) {
	const key = "frames-key"
	s := startServer(t, "auth:\n  keys: ["+key+"]\nlimits:\n  max_event_bytes: 2048\n")
	id := s.createConversation(t, key)
	c, _, err := s.dial(t, "/sockets/events/"+id, hdr("X-Session-API-Key", key))
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, c)
	send(t, c, map[string]any{"role": "user", "content": strings.Repeat("z", 3000)})
	e, err := read(t, c, 30*time.Second)
	if err != nil || e.Kind != "ServerErrorEvent" || e.Code != "event_too_large" {
		t.Fatalf("got %+v %v, want ServerErrorEvent event_too_large", e, err)
	}
	send(t, c, map[string]any{"role": "user", "content": "small"})
	if e, err := read(t, c, 30*time.Second); err != nil || e.text() != "small" {
		t.Fatalf("after the refusal: %+v %v", e, err)
	}
	if code, body := s.request(t, "GET", "/api/conversations/"+id+"/events/count", nil, "X-Session-API-Key", key); string(body) != "1" {
		t.Errorf("events stored: %d %s, want 1", code, body)
	}
	_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
}
