package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// Rotating keys in config.yaml takes effect without a restart: the new key
// works for new connections, the old one is refused, open sockets stay.
func TestKeyRotationWithoutRestart(t *testing.T) {
	const oldKey, newKey = "old-key-1", "new-key-2"
	s := startServer(t, "auth:\n  keys: ['"+oldKey+"']\n")
	id := s.createConversation(t, oldKey)
	open, _, err := s.dial(t, "/sockets/events/"+id, hdr("X-Session-API-Key", oldKey))
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, open)

	s.rewrite(t, "auth:\n  keys: ['sha256:"+sha256Hex(newKey)+"']\n")
	start := time.Now()
	for {
		code, _ := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", newKey)
		if code == 200 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("new key still refused 10s after the rewrite:\n%s", s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("new key accepted %s after the rewrite", time.Since(start).Round(time.Millisecond))
	// The old key is refused at once: the decision cache was emptied.
	for _, path := range []string{"/api/conversations/count"} {
		if code, _ := s.request(t, "GET", path, nil, "X-Session-API-Key", oldKey); code != 401 {
			t.Fatalf("old key after rotation: %d, want 401", code)
		}
	}
	if _, resp, err := s.dial(t, "/sockets/events/"+id, hdr("X-Session-API-Key", oldKey)); err == nil || status(resp) != 401 {
		t.Fatalf("old key opened a new socket after rotation (status %d)", status(resp))
	}
	// The socket opened with the old key is still there and working.
	send(t, open, map[string]any{"role": "user", "content": "still here"})
	if e, err := read(t, open, 30*time.Second); err != nil || e.text() != "still here" {
		t.Fatalf("open socket after rotation: %+v %v", e, err)
	}

	// An invalid change is rejected, names the key, and changes nothing.
	s.rewrite(t, "auth:\n  keys: ['"+oldKey+"']\n  reject_with: sometimes\n")
	s.waitLog(t, "auth.reject_with", 30*time.Second)
	if code, _ := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", newKey); code != 200 {
		t.Fatalf("after an invalid reload the running key is refused: %d", code)
	}
	if code, _ := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", oldKey); code != 401 {
		t.Fatalf("an invalid reload let the old key back in: %d", code)
	}

	// SIGHUP forces a reload too.
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, "SIGHUP: reloading config", 30*time.Second)
	if strings.Contains(s.Log(), oldKey) || strings.Contains(s.Log(), newKey) {
		t.Errorf("a key reached the log:\n%s", s.Log())
	}
}
