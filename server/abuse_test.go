package server

import (
	"testing"
	"time"

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
