package e2e

import (
	"net/http"
	"strconv"
	"testing"
	"time"
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

// Behind a trusted load balancer the limits and the access log see the
// client X-Forwarded-For names, not the balancer: one client's failures
// do not lock out another behind the same balancer, and a client cannot
// escape its limit by writing its own X-Forwarded-For to an untrusted
// server.
func TestTrustedProxies(t *testing.T) {
	failuresThenOK := func(s *server, client, other string) (int, int) {
		t.Helper()
		for range 3 {
			s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", "wrong", "X-Forwarded-For", client)
		}
		blocked, _ := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", key, "X-Forwarded-For", client)
		free, _ := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", key, "X-Forwarded-For", other)
		return blocked, free
	}
	s := startServer(t, keyCfg()+"  failures_per_minute: 3\nserver:\n  trusted_proxies: [127.0.0.1/32]\n")
	if blocked, free := failuresThenOK(s, "203.0.113.9", "203.0.113.10"); blocked != http.StatusTooManyRequests || free != http.StatusOK {
		t.Errorf("trusted: the failing client got %d (want 429), the other %d (want 200)", blocked, free)
	}
	s.waitLog(t, "remote=203.0.113.9:0", 10*time.Second)

	u := startServer(t, keyCfg()+"  failures_per_minute: 3\n")
	if blocked, free := failuresThenOK(u, "203.0.113.9", "203.0.113.10"); blocked != http.StatusTooManyRequests || free != http.StatusTooManyRequests {
		t.Errorf("untrusted: %d and %d, want 429 for both (the header is ignored; the peer failed)", blocked, free)
	}
}
