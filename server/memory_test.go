package server

import (
	"context"
	"log/slog"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/config"
)

func TestReleaserDue(t *testing.T) {
	const quiet = 5 * time.Second
	start := time.Unix(1000, 0)
	active := start.UnixNano()
	tests := []struct {
		name string
		r    releaser
		now  time.Time
		held uint64
		want bool
	}{
		{name: "quiet long enough, grown", now: start.Add(quiet), held: 64 << 20, want: true},
		{name: "still busy", now: start.Add(quiet - time.Millisecond), held: 64 << 20},
		{name: "this quiet spell was released", r: releaser{spell: active}, now: start.Add(time.Hour), held: 64 << 20},
		{name: "a new spell after activity", r: releaser{spell: active - 1}, now: start.Add(quiet), held: 64 << 20, want: true},
		{name: "not grown enough since the last release", r: releaser{floor: 60 << 20}, now: start.Add(quiet), held: 63 << 20},
		{name: "grown by the minimum", r: releaser{floor: 60 << 20}, now: start.Add(quiet), held: 60<<20 + minRelease, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.due(tt.now, quiet, active, tt.held); got != tt.want {
				t.Errorf("due = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestReleaseMemory: garbage left by a burst goes back to the OS once the
// server is quiet, once per quiet spell. Nothing else collects it: without
// an allocation no GC runs, and the runtime's scavenger releases only what a
// GC has freed.
func TestReleaseMemory(t *testing.T) {
	var logs lockedBuffer
	cfg := config.Default()
	cfg.Server.ReleaseMemoryAfter = 50 * time.Millisecond
	s := &Server{cfg: cfg, log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	s.touch()

	burst := make([][]byte, 0, 64)
	for range 64 {
		burst = append(burst, make([]byte, 1<<20))
	}
	runtime.KeepAlive(burst)
	burst = nil // garbage now, still held

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.ReleaseMemory(ctx)
	// A full collection and scavenge can take a while under -race on a
	// busy machine: wait for the release's own report.
	released := regexp.MustCompile(`returned memory to the OS" held_before=(\d+) held_after=(\d+)`)
	deadline := time.Now().Add(30 * time.Second)
	var m []string
	for m = released.FindStringSubmatch(logs.String()); m == nil; m = released.FindStringSubmatch(logs.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no release within 30 s of a quiet spell; log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	before, _ := strconv.ParseUint(m[1], 10, 64)
	after, _ := strconv.ParseUint(m[2], 10, 64)
	if after+32<<20 > before {
		t.Errorf("held %d bytes after the release, %d before: the burst's 64 MiB did not go back", after, before)
	}
	time.Sleep(500 * time.Millisecond) // several more ticks in the same spell
	if n := strings.Count(logs.String(), "returned memory to the OS"); n != 1 {
		t.Errorf("released %d times in one quiet spell, want 1:\n%s", n, logs.String())
	}
}

// server.gc_percent sets the collector's target, 0 gives Go's default, and
// a GOGC in the environment wins and is left as the runtime read it.
func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tests := []struct {
		name     string
		percent  int
		env      string
		runtime  int // the runtime's value before the call (as GOGC set it)
		want     int
		wantFrom string
	}{
		{"configured", 300, "", 100, 300, "server.gc_percent"},
		{"zero is Go's default", 0, "", 250, 100, "server.gc_percent"},
		{"GOGC wins", 300, "77", 77, 77, "GOGC"},
		{"a GOGC Go ignores does not", 300, "lots", 100, 300, "server.gc_percent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(tt.runtime)
			got, from := SetGCPercent(tt.percent, func(k string) string {
				if k == "GOGC" {
					return tt.env
				}
				return ""
			})
			if got != tt.want || from != tt.wantFrom {
				t.Errorf("SetGCPercent = %d from %s, want %d from %s", got, from, tt.want, tt.wantFrom)
			}
			if now := debug.SetGCPercent(100); now != tt.want {
				t.Errorf("the collector's target is %d, want %d", now, tt.want)
			}
		})
	}
}
