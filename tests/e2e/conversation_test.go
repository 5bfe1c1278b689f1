package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func keyCfg() string { return "auth:\n  keys: ['" + key + "']\n" }

func authH() http.Header { return hdr("X-Session-API-Key", key) }

func TestHandshakeRefusals(t *testing.T) {
	s := startServer(t, keyCfg()+"server:\n  allowed_origins: ['https://console.example']\nlimits:\n  subscribers_per_conversation: 2\n")
	id := s.createConversation(t, key)

	t.Run("malformed id is 400 before upgrade", func(t *testing.T) {
		_, resp, err := s.dial(t, "/sockets/events/not-a-uuid", authH())
		if err == nil || status(resp) != 400 {
			t.Fatalf("status = %d, want 400", status(resp))
		}
	})
	t.Run("foreign origin is 403", func(t *testing.T) {
		h := authH()
		h.Set("Origin", "https://evil.example")
		_, resp, err := s.dial(t, "/sockets/events/"+id, h)
		if err == nil || status(resp) != 403 {
			t.Fatalf("status = %d, want 403", status(resp))
		}
	})
	t.Run("listed origin is allowed", func(t *testing.T) {
		h := authH()
		h.Set("Origin", "https://console.example")
		c, _, err := s.dial(t, "/sockets/events/"+id, h)
		if err != nil {
			t.Fatal(err)
		}
		mustReady(t, c)
		c.Close()
	})
	t.Run("same-host origin is allowed", func(t *testing.T) {
		h := authH()
		h.Set("Origin", "http://"+s.addr)
		c, _, err := s.dial(t, "/sockets/events/"+id, h)
		if err != nil {
			t.Fatal(err)
		}
		mustReady(t, c)
		c.Close()
	})
	t.Run("unknown conversation closes 4004", func(t *testing.T) {
		c, _, err := s.dial(t, "/sockets/events/00000000-0000-4000-8000-000000000000", authH())
		if err != nil {
			t.Fatal(err)
		}
		if code, reason := closeCode(t, c, 30*time.Second); code != 4004 || reason != "Conversation not found" {
			t.Fatalf("close = %d %q, want 4004", code, reason)
		}
	})
	t.Run("subscriber cap closes 1013", func(t *testing.T) {
		id := s.createConversation(t, key)
		for i := 0; i < 2; i++ {
			c, _, err := s.dial(t, "/sockets/events/"+id, authH())
			if err != nil {
				t.Fatal(err)
			}
			mustReady(t, c)
		}
		c, _, err := s.dial(t, "/sockets/events/"+id, authH())
		if err != nil {
			t.Fatal(err)
		}
		if code, _ := closeCode(t, c, 30*time.Second); code != 1013 {
			t.Fatalf("close = %d, want 1013", code)
		}
	})
}

func TestMessagesAndBadFrames(t *testing.T) {
	s := startServer(t, keyCfg())
	id := s.createConversation(t, key)
	a, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, a)
	mustReady(t, b)

	send(t, a, `{"type":"auth","session_api_key":"whatever"}`) // ignored silently
	send(t, a, `not json`)
	e, err := read(t, a, 30*time.Second)
	if err != nil || e.Kind != "ServerErrorEvent" || e.Code == "" || e.Detail == "" || e.Source != "environment" {
		t.Fatalf("after a bad frame got %+v, %v; want a ServerErrorEvent with code and detail", e, err)
	}
	send(t, a, `{"role":"assistant","content":"x"}`)
	if e, err = read(t, a, 30*time.Second); err != nil || e.Kind != "ServerErrorEvent" {
		t.Fatalf("wrong role got %+v, %v", e, err)
	}

	send(t, a, map[string]any{"role": "user", "content": "hello"})
	for name, c := range map[string]*websocket.Conn{"sender": a, "other": b} {
		e, err := read(t, c, 30*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if e.Kind != "MessageEvent" || e.Source != "user" || e.text() != "hello" || e.ID == "" || e.Timestamp == "" {
			t.Fatalf("%s got %+v, want the user MessageEvent", name, e)
		}
	}
	// The socket stayed open through the bad frames, and parts work too.
	send(t, b, map[string]any{"role": "user", "content": []map[string]any{{"type": "text", "text": "parts"}}})
	if e, err := read(t, a, 30*time.Second); err != nil || e.text() != "parts" {
		t.Fatalf("got %+v, %v", e, err)
	}
	// Frames over the limit close with 1009.
	send(t, a, `{"role":"user","content":"`+strings.Repeat("x", 70<<10)+`"}`)
	if code, _ := closeCode(t, a, 30*time.Second); code != 1009 {
		t.Fatalf("oversize frame closed with %d, want 1009", code)
	}
}

// Every replay mode returns exactly the asked-for events while a publisher
// keeps posting: no loss, no duplicate between replay and live delivery.
func TestReplayModesUnderLoad(t *testing.T) {
	s := startServer(t, keyCfg())
	id := s.createConversation(t, key)
	post := func(text string) {
		code, body := s.request(t, "POST", "/api/conversations/"+id+"/events", map[string]any{"role": "user", "content": text}, "X-Session-API-Key", key)
		if code != 200 {
			t.Errorf("post: %d %s", code, body)
		}
	}
	for i := 0; i < 50; i++ {
		post(fmt.Sprintf("m%d", i))
	}
	// Find the 20th event's id and timestamp through REST.
	code, body := s.request(t, "GET", "/api/conversations/"+id+"/events/search?limit=100", nil, "X-Session-API-Key", key)
	if code != 200 {
		t.Fatalf("search: %d %s", code, body)
	}
	var page struct{ Items []event }
	if err := json.Unmarshal(body, &page); err != nil || len(page.Items) != 50 {
		t.Fatalf("search returned %d items (%v)", len(page.Items), err)
	}
	pivot := page.Items[19]

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the concurrent publisher: m50, m51, ...
		defer wg.Done()
		for i := 50; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			post(fmt.Sprintf("m%d", i))
		}
	}()

	tests := []struct {
		name  string
		query string
		first int // index of the first message replayed; -1 for none
	}{
		{"no replay", "", -1},
		{"resend_all", "?resend_all=true", 0},
		{"resend_mode all", "?resend_mode=all", 0},
		{"resend_mode wins over resend_all", "?resend_all=true&resend_mode=since&after_timestamp=" + pivot.Timestamp, 19},
		{"since timestamp", "?resend_mode=since&after_timestamp=" + pivot.Timestamp, 19},
		{"after_id", "?after_id=" + pivot.ID, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := s.dial(t, "/sockets/events/"+id+tt.query, authH())
			if err != nil {
				t.Fatal(err)
			}
			mustReady(t, c)
			// Read until we have seen 30 live messages past the replay; the
			// numbers must be consecutive with no repeats.
			next := tt.first
			for seen := 0; seen < 60; seen++ {
				e, err := read(t, c, 30*time.Second)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				var n int
				if _, err := fmt.Sscanf(e.text(), "m%d", &n); err != nil {
					t.Fatalf("unexpected frame %+v", e)
				}
				if next == -1 {
					next = n // no replay: live starts anywhere
				}
				if n != next {
					t.Fatalf("got m%d, want m%d (loss or duplicate)", n, next)
				}
				next++
			}
		})
	}
	close(stop)
	wg.Wait()

	t.Run("unknown after_id", func(t *testing.T) {
		c, _, err := s.dial(t, "/sockets/events/"+id+"?after_id=00000000-0000-4000-8000-000000000000", authH())
		if err != nil {
			t.Fatal(err)
		}
		mustReady(t, c)
		e, err := read(t, c, 30*time.Second)
		if err != nil || e.Kind != "ServerErrorEvent" || e.Code != "unknown_event_id" {
			t.Fatalf("got %+v, %v; want ServerErrorEvent unknown_event_id", e, err)
		}
	})
}

func TestDeleteClosesSockets(t *testing.T) {
	s := startServer(t, keyCfg())
	id := s.createConversation(t, key)
	c, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, c)
	code, body := s.request(t, "DELETE", "/api/conversations/"+id, nil, "X-Session-API-Key", key)
	if code != 200 || !strings.Contains(string(body), `"success":true`) {
		t.Fatalf("delete: %d %s", code, body)
	}
	if cc, _ := closeCode(t, c, 30*time.Second); cc != 4004 {
		t.Fatalf("close = %d, want 4004", cc)
	}
	if code, _ := s.request(t, "GET", "/api/conversations/"+id, nil, "X-Session-API-Key", key); code != 404 {
		t.Fatalf("get after delete = %d, want 404", code)
	}
}

// 200 sockets over 20 conversations: each receives every message of its
// conversation exactly once.
func TestManyConnections(t *testing.T) {
	s := startServer(t, keyCfg())
	const convs, per, msgs = 20, 10, 5
	type sub struct {
		c    *websocket.Conn
		conv int
	}
	ids := make([]string, convs)
	var subs []sub
	for i := range ids {
		ids[i] = s.createConversation(t, key)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < convs*per; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := websocket.DefaultDialer.Dial(s.wsURL("/sockets/events/"+ids[i%convs]), authH())
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			mu.Lock()
			subs = append(subs, sub{c, i % convs})
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, sb := range subs {
		defer sb.c.Close()
		mustReady(t, sb.c)
	}
	for i, id := range ids {
		for m := 0; m < msgs; m++ {
			if code, body := s.request(t, "POST", "/api/conversations/"+id+"/events", map[string]any{"role": "user", "content": fmt.Sprintf("c%d-m%d", i, m)}, "X-Session-API-Key", key); code != 200 {
				t.Fatalf("post: %d %s", code, body)
			}
		}
	}
	for _, sb := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := 0; m < msgs; m++ {
				e, err := read(t, sb.c, 30*time.Second)
				if err != nil {
					t.Errorf("conv %d: %v", sb.conv, err)
					return
				}
				if want := fmt.Sprintf("c%d-m%d", sb.conv, m); e.text() != want {
					t.Errorf("conv %d got %q, want %q", sb.conv, e.text(), want)
					return
				}
			}
			_ = sb.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, b, err := sb.c.ReadMessage(); err == nil {
				t.Errorf("conv %d: extra frame %s", sb.conv, b)
			}
		}()
	}
	wg.Wait()
}

func TestGracefulShutdown(t *testing.T) {
	s := startServer(t, keyCfg()+"server:\n  shutdown_timeout: 5s\n")
	id := s.createConversation(t, key)
	c, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, c)
	plugins := children(t, s.cmd.Process.Pid)
	if len(plugins) != 10 { // the default chains use five plugins, two processes each
		t.Fatalf("server has %d child processes, want 10: 5 plugins, 2 processes each", len(plugins))
	}
	type closed struct {
		code int
		err  error
	}
	done := make(chan closed, 1)
	go func() {
		code, _, err := awaitClose(c, 30*time.Second)
		done <- closed{code, err}
	}()
	if err := s.stop(30 * time.Second); err != nil {
		t.Fatalf("shutdown: %v\n%s", err, s.Log())
	}
	if got := <-done; got.err != nil || got.code != 1001 {
		t.Fatalf("socket closed with %d (%v), want 1001", got.code, got.err)
	}
	if alive := gone(plugins, 30*time.Second); len(alive) > 0 {
		t.Fatalf("plugin processes %v outlived a graceful shutdown", alive)
	}
}

// Even SIGKILL of the server leaves no plugin process behind.
func TestKilledServerLeavesNoPlugins(t *testing.T) {
	s := startServer(t, keyCfg())
	plugins := children(t, s.cmd.Process.Pid)
	if len(plugins) != 10 { // the default chains use five plugins, two processes each
		t.Fatalf("server has %d child processes, want 10: 5 plugins, 2 processes each", len(plugins))
	}
	s.kill()
	if alive := gone(plugins, 30*time.Second); len(alive) > 0 {
		t.Fatalf("plugin processes %v outlived a SIGKILLed server", alive)
	}
}
