package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// With auth.revalidate_on_reload, rotating the key out closes the sockets
// opened with it (header and first-message alike) with 4001 "Credential
// revoked"; without it they stay. Sockets on the surviving key stay either way.
func TestRevalidateOnReload(t *testing.T) {
	const oldKey, newKey = "old-key-1", "new-key-2"
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "on", false: "off"}[on], func(t *testing.T) {
			flag := map[bool]string{true: "true", false: "false"}[on]
			cfg := func(keys string) string {
				return "auth:\n  keys: [" + keys + "]\n  revalidate_on_reload: " + flag + "\n"
			}
			s := startServer(t, cfg("'"+oldKey+"', '"+newKey+"'"))
			id := s.createConversation(t, oldKey)
			path := "/sockets/events/" + id
			byOld, _, err := s.dial(t, path, hdr("X-Session-API-Key", oldKey))
			if err != nil {
				t.Fatal(err)
			}
			mustReady(t, byOld)
			byFirst, _, err := s.dial(t, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			send(t, byFirst, map[string]string{"type": "auth", "session_api_key": oldKey})
			mustReady(t, byFirst)
			byNew, _, err := s.dial(t, path, hdr("X-Session-API-Key", newKey))
			if err != nil {
				t.Fatal(err)
			}
			mustReady(t, byNew)

			s.rewrite(t, cfg("'"+newKey+"'"))
			s.waitLog(t, "config reloaded", 30*time.Second)
			open := []*websocket.Conn{byNew}
			if on {
				s.waitLog(t, "open sockets revalidated", 30*time.Second)
				for _, c := range []*websocket.Conn{byOld, byFirst} {
					if code, text := closeCode(t, c, 30*time.Second); code != 4001 || text != "Credential revoked" {
						t.Fatalf("closed %d %q, want 4001 Credential revoked", code, text)
					}
				}
				// Both revocations are audited, with the socket's handshake
				// request ID; so was the first message that opened one.
				revoked := waitAudit(t, s, "revalidation", 2)
				if len(revoked) != 2 {
					t.Fatalf("%d revalidation audit records, want 2:\n%s", len(revoked), s.Log())
				}
				plugins := map[any]bool{}
				for _, r := range revoked {
					plugins[r["plugin"]] = true
					if r["decision"] != "deny" || r["reason_class"] != "revoked" || r["conversation"] != id || r["request_id"] == "" {
						t.Errorf("revalidation record %v", r)
					}
				}
				if !plugins["header"] || !plugins["first_message"] {
					t.Errorf("revoked sockets' deciding plugins = %v, want header and first_message", plugins)
				}
				if first := waitAudit(t, s, "first_message", 1); len(first) != 1 || first[0]["decision"] != "allow" || first[0]["subject"] != "api_key" {
					t.Errorf("first_message records = %v, want one allow of an api_key", first)
				}
			} else {
				open = append(open, byOld, byFirst)
			}
			for i, c := range open {
				send(t, c, map[string]any{"role": "user", "content": "still here"})
				for {
					e, err := read(t, c, 30*time.Second)
					if err != nil {
						t.Fatalf("socket %d after the reload: %v", i, err)
					}
					if e.text() == "still here" {
						break
					}
				}
			}
		})
	}
}

// A principal with an expiry (a JWT exp) has its socket closed with 4001
// "Credential expired" when that time comes, through the real jwt plugin.
func TestJWTExpiryClosesSocket(t *testing.T) {
	s := startServer(t, keyCfg()+`  chains:
    events: [jwt, header]
    rest: [header]
plugins:
  instances:
    jwt:
      config:
        secret: "`+jwtSecret+`"
`)
	id := s.createConversation(t, key)
	// Far enough ahead that a slow handshake on a loaded machine is still
	// inside it; whole seconds, as exp carries.
	exp := time.Unix(time.Now().Add(4*time.Second).Unix(), 0)
	tok := token(t, jwtSecret, jwtlib.MapClaims{"sub": "alice", "exp": exp.Unix()})
	c, resp, err := s.dial(t, "/sockets/events/"+id, hdr("Authorization", "Bearer "+tok))
	if err != nil {
		t.Fatalf("dial: %v (status %d)", err, status(resp))
	}
	mustReady(t, c)
	code, text := closeCode(t, c, 30*time.Second)
	if code != 4001 || text != "Credential expired" {
		t.Fatalf("closed %d %q, want 4001 Credential expired", code, text)
	}
	if late := time.Since(exp); late < 0 {
		t.Errorf("closed %s before exp", -late)
	}
	recs := waitAudit(t, s, "expiry", 1)
	if len(recs) != 1 || recs[0]["plugin"] != "jwt" || recs[0]["subject"] != "alice" || recs[0]["reason_class"] != "expired" || recs[0]["conversation"] != id {
		t.Errorf("expiry audit records = %v, want one for alice's socket, by jwt", recs)
	}
}

// waitAudit returns the audit records of event the server wrote to stderr
// (audit.sink's default), once there are at least n or after 10 s.
func waitAudit(t *testing.T, s *server, event string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out []map[string]any
		for _, line := range strings.Split(s.Log(), "\n") {
			var rec map[string]any
			if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &rec) == nil && rec["event"] == event {
				out = append(out, rec)
			}
		}
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}
