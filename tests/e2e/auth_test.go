package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const key = "k-Pl@in#Key+1$"

// The ten default-chain cases of the plugin issue, over a real handshake
// against the real binary and real plugin processes.
func TestWebSocketAuthChain(t *testing.T) {
	s := startServer(t, "auth:\n  keys: ['"+key+"']\n")
	id := s.createConversation(t, key)
	path := "/sockets/events/" + id
	q := func(k string) string { return path + "?session_api_key=" + url.QueryEscape(k) }
	tests := []struct {
		name   string
		path   string
		header http.Header
		want   int // 101, the refusal status, or 4001: upgraded for first_message, closed on a non-auth frame
	}{
		{"no credentials", path, nil, 4001},
		{"query", q(key), nil, 101},
		{"query with + unencoded", path + "?session_api_key=" + strings.ReplaceAll(url.QueryEscape(key), "%2B", "+"), nil, 101},
		{"header", path, hdr("X-Session-API-Key", key), 101},
		{"header any case and padded", path, http.Header{"x-session-api-key": {"  " + key + " "}}, 101},
		{"bearer", path, hdr("Authorization", "Bearer "+key), 101},
		{"correct query, wrong header", q(key), hdr("X-Session-API-Key", "wrong"), 101},
		{"wrong query, correct header", q("wrong"), hdr("X-Session-API-Key", key), 401},
		{"empty query, correct header", path + "?session_api_key=", hdr("X-Session-API-Key", key), 101},
		{"wrong header, correct bearer", path, hdr("X-Session-API-Key", "wrong", "Authorization", "Bearer "+key), 401},
		{"lowercase bearer", path, hdr("Authorization", "bearer "+key), 101},
		{"basic", path, hdr("Authorization", "Basic dXNlcjpwYXNz"), 4001},
		{"key case matters", path, hdr("X-Session-API-Key", strings.ToUpper(key)), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, resp, err := s.dial(t, tt.path, tt.header)
			if tt.want == 101 {
				if err != nil {
					t.Fatalf("dial: %v (status %v)", err, status(resp))
				}
				mustReady(t, c)
				return
			}
			if tt.want == 4001 { // every pre-upgrade plugin abstained
				if err != nil {
					t.Fatalf("dial: %v (status %v)", err, status(resp))
				}
				send(t, c, map[string]any{"role": "user", "content": "not an auth frame"})
				if code, text := closeCode(t, c, 30*time.Second); code != 4001 || text != "Authentication failed" {
					t.Fatalf("closed %d %q, want 4001 Authentication failed", code, text)
				}
				return
			}
			if err == nil {
				t.Fatal("handshake succeeded; want it refused")
			}
			if got := status(resp); got != tt.want {
				t.Fatalf("status = %d, want %d", got, tt.want)
			}
		})
	}
	log := s.Log()
	for _, secret := range []string{key, url.QueryEscape(key), strings.ToUpper(key)} {
		if strings.Contains(log, secret) {
			t.Errorf("a key appears in the server log:\n%s", log)
		}
	}
	if !strings.Contains(log, "session_api_key=***") {
		t.Errorf("the access log does not show the redacted query key:\n%s", log)
	}
}

func status(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// REST auth: 401 without a key, header names in any case, keys case
// sensitive, odd characters, several valid keys.
func TestRESTAuth(t *testing.T) {
	k2 := "second-key"
	s := startServer(t, "auth:\n  keys: ['"+key+"', 'sha256:"+sha256Hex(k2)+"']\n")
	tests := []struct {
		name    string
		headers []string
		want    int
	}{
		{"none", nil, 401},
		{"header", []string{"X-Session-API-Key", key}, 200},
		{"header lower-case name", []string{"x-session-api-key", key}, 200},
		{"second key given as sha256", []string{"X-Session-API-Key", k2}, 200},
		{"bearer", []string{"Authorization", "Bearer " + k2}, 200},
		{"wrong case", []string{"X-Session-API-Key", strings.ToLower(key)}, 401},
		{"query is not accepted on rest", nil, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := "/api/conversations/count"
			if tt.name == "query is not accepted on rest" {
				path += "?session_api_key=" + url.QueryEscape(key)
			}
			code, body := s.request(t, "GET", path, nil, tt.headers...)
			if code != tt.want {
				t.Fatalf("status = %d (%s), want %d", code, body, tt.want)
			}
			if code == 401 && !strings.Contains(string(body), `"detail"`) {
				t.Errorf("401 body = %s, want a JSON detail", body)
			}
		})
	}
}

// A browser client that cannot read a refused handshake's status gets 4001.
func TestRejectWithClose(t *testing.T) {
	s := startServer(t, "auth:\n  keys: ['"+key+"']\n  reject_with: close\n")
	id := s.createConversation(t, key)
	c, _, err := s.dial(t, "/sockets/events/"+id+"?session_api_key=wrong", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	code, reason := closeCode(t, c, 30*time.Second)
	if code != 4001 || reason != "Authentication failed" {
		t.Fatalf("close = %d %q, want 4001 \"Authentication failed\"", code, reason)
	}
}
