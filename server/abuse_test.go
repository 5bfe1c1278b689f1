package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/core/config"
)

func TestFailureBucket(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	tests := []struct {
		name      string
		perMinute int
		failures  []time.Duration // offsets from t0
		at        time.Duration
		blocked   bool
		wait      time.Duration // with blocked; checked to within a second
	}{
		{"under the limit", 3, []time.Duration{0, 0}, 0, false, 0},
		{"at the limit", 3, []time.Duration{0, 0, 0}, 0, true, 20 * time.Second},
		{"drained a little", 3, []time.Duration{0, 0, 0}, 10 * time.Second, true, 10 * time.Second},
		{"drained one", 3, []time.Duration{0, 0, 0}, 21 * time.Second, false, 0},
		{"spread out", 3, []time.Duration{0, 30 * time.Second, 60 * time.Second, 90 * time.Second}, 90 * time.Second, false, 0},
		{"off", 0, []time.Duration{0, 0, 0, 0}, 0, false, 0},
		{"other address untouched", 1, nil, 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newAddrLimits(config.Auth{FailuresPerMinute: tt.perMinute})
			l.fail("192.0.2.9", t0)
			for _, f := range tt.failures {
				l.fail("192.0.2.1", t0.Add(f))
			}
			wait, blocked := l.blocked("192.0.2.1", t0.Add(tt.at))
			if blocked != tt.blocked {
				t.Fatalf("blocked = %v, want %v", blocked, tt.blocked)
			}
			if blocked && (wait < tt.wait-time.Second || wait > tt.wait+time.Second) {
				t.Errorf("wait = %s, want about %s", wait, tt.wait)
			}
		})
	}
}

func TestPendingCap(t *testing.T) {
	l := newAddrLimits(config.Auth{UnauthenticatedPerAddress: 2})
	for i := range 2 {
		if !l.reserve("a") {
			t.Fatalf("reservation %d of 2 refused", i+1)
		}
	}
	if l.reserve("a") {
		t.Fatal("third reservation allowed")
	}
	if !l.reserve("b") {
		t.Fatal("another address refused")
	}
	l.release("a")
	if !l.reserve("a") {
		t.Fatal("reservation refused after a release")
	}
	l.release("a")
	l.release("a")
	l.release("b")
	if len(l.pending) != 0 {
		t.Errorf("pending = %v after every release, want empty", l.pending)
	}
}

// An authentication error the request itself caused (an unknown signing
// key) is answered 503 but counts toward auth.failures_per_minute, on the
// socket route and on REST; an error the server caused does not count.
func TestRequestFaultCountsAsFailure(t *testing.T) {
	for _, route := range []string{"events", "rest"} {
		t.Run(route, func(t *testing.T) {
			e := newEdge(t, func(c *config.Config) { c.Auth.FailuresPerMinute = 2 })
			id := e.conversation(t)
			try := func(key string) int {
				t.Helper()
				h := http.Header{"X-Session-API-Key": {key}}
				if route == "events" {
					c, resp, err := websocket.DefaultDialer.Dial(e.eventsURL(id, ""), h)
					if err == nil {
						c.Close()
						return http.StatusSwitchingProtocols
					}
					if resp == nil {
						t.Fatalf("dial: %v", err)
					}
					return resp.StatusCode
				}
				req, _ := http.NewRequest("GET", e.ts.URL+"/api/conversations/"+id, nil)
				req.Header = h
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			ok := http.StatusSwitchingProtocols
			if route == "rest" {
				ok = http.StatusOK
			}
			for range 3 {
				if got := try(brokenKey); got != http.StatusServiceUnavailable {
					t.Fatalf("server-side error: %d, want 503", got)
				}
			}
			if got := try(goodKey); got != ok {
				t.Fatalf("after server-side errors: %d, want %d (they must not count)", got, ok)
			}
			for range 2 {
				if got := try(faultKey); got != http.StatusServiceUnavailable {
					t.Fatalf("request fault: %d, want 503", got)
				}
			}
			if got := try(goodKey); got != http.StatusTooManyRequests {
				t.Errorf("after 2 request faults with failures_per_minute 2: %d, want 429", got)
			}
		})
	}
}
