package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Admission under overload, with the real server and the webhook plugin
// against a forward-auth service on loopback that holds every call until
// the test lets it answer. The plugin has one process with two call
// slots and the queue two places: two handshakes take the slots, two
// wait, and the next ones are refused at once with 503 and Retry-After,
// while a socket opened before keeps receiving its conversation's events.
// When the service answers, the waiting handshakes are let in.
func TestSaturatedPluginQueuesThenRefusesHandshakes(t *testing.T) {
	gate := make(chan struct{})
	var arrived atomic.Int32
	var release sync.Once
	open := func() { release.Do(func() { close(gate) }) }
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("X-Auth-Request-User", "slow-user")
	}))
	t.Cleanup(auth.Close)
	t.Cleanup(open) // before auth.Close: let held calls finish

	s := startServer(t, `auth:
  keys: ['`+key+`']
  cache: {enabled: false}
  failures_per_minute: 0
  queue: {size: 2, max_wait: 9s}
  chains:
    events: [header, slow]
    rest: [header]
plugins:
  instances:
    slow:
      path: `+filepath.Join(binDir, "plugins", "auth-webhook")+`
      processes: 1
      max_in_flight: 2
      config: {url: "`+auth.URL+`", mode: forward, headers: [X-Slow-Token], allow_insecure_url: true, timeout: 9s}
`)
	admin := s.adminAddr(t)
	conv := s.createConversation(t, key)
	path := "/sockets/events/" + conv

	// A socket open before the storm, on the fast header plugin.
	early, _, err := s.dial(t, path, authH())
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, early)

	slow := func(k int) http.Header { return hdr("X-Slow-Token", fmt.Sprintf("slow-token-%d", k)) }
	type outcome struct {
		code int
		err  error
	}
	pending := make(chan outcome, 4)
	dial := func(k int) {
		c, resp, err := s.dial(t, path, slow(k))
		if err == nil {
			_, err = read(t, c, 30*time.Second) // full_state
		}
		pending <- outcome{status(resp), err}
	}
	for k := range 2 {
		go dial(k)
	}
	waitUntil(t, "both call slots taken", func() bool { return arrived.Load() == 2 })
	for k := 2; k < 4; k++ {
		go dial(k)
	}
	waitUntil(t, "two handshakes queued", func() bool {
		return strings.Contains(scrape(t, admin), `agent_server_auth_queue_depth{plugin="slow"} 2`)
	})

	// Past the queue: refused at once, with Retry-After.
	for k := 4; k < 7; k++ {
		start := time.Now()
		_, resp, err := s.dial(t, path, slow(k))
		if err == nil || status(resp) != http.StatusServiceUnavailable {
			t.Fatalf("handshake %d past the queue: %d (%v), want 503", k, status(resp), err)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("handshake %d: 503 without Retry-After", k)
		}
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("handshake %d was refused after %s: it hung instead of being refused at once", k, took)
		}
	}

	// The open socket keeps receiving while the plugin is saturated.
	if !postText(s, conv, "during the storm") {
		t.Fatal("posting an event while saturated failed")
	}
	for {
		e, err := read(t, early, 10*time.Second)
		if err != nil {
			t.Fatalf("the open socket received nothing while the plugin was saturated: %v", err)
		}
		if e.text() == "during the storm" {
			break
		}
	}
	if n := arrived.Load(); n != 2 {
		t.Errorf("the service saw %d calls while saturated, want 2: the queue let more through than the slots", n)
	}

	open()
	for range 4 {
		if o := <-pending; o.code != http.StatusSwitchingProtocols || o.err != nil {
			t.Errorf("a handshake that held a slot or waited: %d (%v), want 101 and full_state", o.code, o.err)
		}
	}
	metrics := scrape(t, admin)
	for _, want := range []string{
		`agent_server_socket_upgrades_refused_total{reason="auth_overloaded",route="events"} 3`,
		`agent_server_auth_queue_rejections_total{plugin="slow",reason="full"} 3`,
		`agent_server_auth_queue_depth{plugin="slow"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// waitUntil polls ok for up to 30 s.
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
