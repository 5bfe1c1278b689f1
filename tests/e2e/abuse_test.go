package e2e

import (
	"net/http"
	"strconv"
	"testing"
)

// Through the real binary: after auth.failures_per_minute failures an
// address gets 429 with Retry-After on both routes, even with the right key,
// and at most auth.unauthenticated_per_address first-message sockets wait.
func TestAbuseLimits(t *testing.T) {
	s := startServer(t, keyCfg()+"  failures_per_minute: 3\n  unauthenticated_per_address: 2\n")
	id := s.createConversation(t, key)
	path := "/sockets/events/" + id

	// Two sockets waiting for their first message fill the cap.
	for range 2 {
		if _, resp, err := s.dial(t, path, nil); err != nil {
			t.Fatalf("unauthenticated socket: %v (status %d)", err, status(resp))
		}
	}
	if _, resp, err := s.dial(t, path, nil); err == nil || status(resp) != http.StatusTooManyRequests {
		t.Fatalf("third unauthenticated socket: status %d, want 429", status(resp))
	}

	for i := range 3 {
		if _, resp, err := s.dial(t, path, hdr("X-Session-API-Key", "wrong")); err == nil || status(resp) != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d, want 401", i, status(resp))
		}
	}
	_, resp, err := s.dial(t, path, hdr("X-Session-API-Key", key))
	if err == nil || status(resp) != http.StatusTooManyRequests {
		t.Fatalf("right key after the limit: status %d, want 429", status(resp))
	}
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 || n > 60 {
		t.Errorf("Retry-After = %q, want 1..60 seconds", resp.Header.Get("Retry-After"))
	}
	if code, _ := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", key); code != http.StatusTooManyRequests {
		t.Errorf("REST after the limit: %d, want 429", code)
	}
}
