package e2e

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// tokenEntry is the subprotocol entry that carries k.
func tokenEntry(k string) string {
	return "base64url.bearer.agent-server." + base64.RawURLEncoding.EncodeToString([]byte(k))
}

// Subprotocol auth through the real auth-subprotocol plugin: the server
// echoes agent-server.v1 and never the token, and refuses a duplicate or
// malformed token and a token without the real protocol before the upgrade.
func TestSubprotocolAuth(t *testing.T) {
	s := startServer(t, keyCfg())
	id := s.createConversation(t, key)
	path := "/sockets/events/" + id
	tests := []struct {
		name    string
		offered []string
		want    int // 101 or the refusal status
	}{
		{"protocol and token", []string{"agent-server.v1", tokenEntry(key)}, 101},
		{"token first", []string{tokenEntry(key), "agent-server.v1"}, 101},
		{"wrong key", []string{"agent-server.v1", tokenEntry("wrong")}, 401},
		{"no real protocol", []string{tokenEntry(key)}, 401},
		{"duplicate token", []string{"agent-server.v1", tokenEntry(key), tokenEntry(key)}, 401},
		{"malformed token", []string{"agent-server.v1", "base64url.bearer.agent-server.!!"}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: tt.offered}
			c, resp, err := d.Dial(s.wsURL(path), nil)
			if tt.want != 101 {
				if err == nil {
					c.Close()
					t.Fatal("handshake succeeded; want it refused")
				}
				if got := status(resp); got != tt.want {
					t.Fatalf("status = %d, want %d", got, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v (status %d)", err, status(resp))
			}
			defer c.Close()
			if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "agent-server.v1" {
				t.Fatalf("echoed %q, want only agent-server.v1", got)
			}
			mustReady(t, c)
		})
	}
	// A header-authenticated client that offers the protocol gets it echoed;
	// one that offers none gets none.
	for _, offered := range [][]string{{"agent-server.v1"}, nil} {
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: offered}
		c, resp, err := d.Dial(s.wsURL(path), http.Header{"X-Session-API-Key": {key}})
		if err != nil {
			t.Fatalf("offer %v: dial: %v", offered, err)
		}
		if got, want := resp.Header.Get("Sec-WebSocket-Protocol"), strings.Join(offered, ""); got != want {
			t.Errorf("offer %v: echoed %q, want %q", offered, got, want)
		}
		mustReady(t, c)
		c.Close()
	}
	if log := s.Log(); strings.Contains(log, key) || strings.Contains(log, tokenEntry(key)) {
		t.Errorf("the key reached the log:\n%s", log)
	}
}

// first_message through the real plugin: a socket with no credential in
// its handshake authenticates with its first frame; full_state is the first
// frame it gets. A bad first frame closes it with 4001.
func TestFirstMessageAuth(t *testing.T) {
	s := startServer(t, keyCfg()+"  first_message_timeout: 300ms\n")
	id := s.createConversation(t, key)
	path := "/sockets/events/" + id
	c, _, err := s.dial(t, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	send(t, c, map[string]string{"type": "auth", "session_api_key": key})
	mustReady(t, c)
	send(t, c, map[string]any{"role": "user", "content": "hello"})
	if e, err := read(t, c, 30*time.Second); err != nil || e.text() != "hello" {
		t.Fatalf("echo: %+v %v", e, err)
	}
	for name, first := range map[string]any{
		"timeout":   nil,
		"wrong key": map[string]string{"type": "auth", "session_api_key": "wrong"},
		"malformed": "{not json",
	} {
		c, _, err := s.dial(t, path, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if first != nil {
			send(t, c, first)
		}
		if code, text := closeCode(t, c, 30*time.Second); code != 4001 || text != "Authentication failed" {
			t.Fatalf("%s: closed %d %q, want 4001 Authentication failed", name, code, text)
		}
	}
	if strings.Contains(s.Log(), key) {
		t.Errorf("the key reached the log")
	}
}
