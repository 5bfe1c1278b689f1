package e2e

import (
	"net/http"
	"testing"
	"time"
)

// Through the real binary: a REST post retried with its Idempotency-Key
// appends nothing and answers as the first did; the key with another body
// gets 422; a socket frame sent again with its idempotency_key is stored
// once. Both drivers.
func TestIdempotencyKeys(t *testing.T) {
	forEachDriver(t, func(t *testing.T, storage string) {
		s := startServer(t, keyCfg()+storage)
		id := s.createConversation(t, key)
		post := func(body, k string) int {
			code, _ := s.request(t, "POST", "/api/conversations/"+id+"/events", []byte(body), "X-Session-API-Key", key, "Idempotency-Key", k)
			return code
		}
		msg := `{"role":"user","content":"once"}`
		for i := range 3 {
			if code := post(msg, "rest-key-1"); code != http.StatusOK {
				t.Fatalf("post %d: %d", i, code)
			}
		}
		if code := post(`{"role":"user","content":"other"}`, "rest-key-1"); code != http.StatusUnprocessableEntity {
			t.Errorf("the key with another body: %d, want 422", code)
		}
		if code := post(msg, "~reserved"); code != http.StatusBadRequest {
			t.Errorf("a key starting with ~: %d, want 400", code)
		}
		c, _, err := s.dial(t, "/sockets/events/"+id, authH())
		if err != nil {
			t.Fatal(err)
		}
		mustReady(t, c)
		frame := map[string]any{"role": "user", "content": "from the socket", "idempotency_key": "socket-key-1"}
		send(t, c, frame)
		if e, err := read(t, c, 30*time.Second); err != nil || e.text() != "from the socket" {
			t.Fatalf("first frame: %+v %v", e, err)
		}
		send(t, c, frame) // as after a reconnect: nothing more is stored
		send(t, c, map[string]any{"role": "user", "content": "after"})
		if e, err := read(t, c, 30*time.Second); err != nil || e.text() != "after" {
			t.Fatalf("after the repeated frame got %+v %v, want the next message (nothing twice)", e, err)
		}
		if code, body := s.request(t, "GET", "/api/conversations/"+id+"/events/count?kind=MessageEvent", nil, "X-Session-API-Key", key); string(body) != "3" {
			t.Errorf("messages stored: %d %s, want 3", code, body)
		}
	})
}
