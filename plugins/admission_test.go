package plugins_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
)

// saturated starts the fault plugin in header mode with one process of one
// call slot, so that one held call saturates it, and the queue given.
func saturated(t *testing.T, hold time.Duration, queue config.Queue, cache bool) (*plugins.Host, *core.Chain, *prometheus.Registry) {
	t.Helper()
	cfg := headerFault(t, 1, hold)
	cfg.Plugins.MaxInFlight = 1
	cfg.Auth.Queue = queue
	cfg.Auth.Cache.Enabled = cache
	h, reg := startMeasuredHost(t, cfg)
	return h, chain(t, h, core.RouteREST), reg
}

// authAsync runs one request in the background.
func authAsync(c *core.Chain, what string) <-chan core.Result {
	out := make(chan core.Result, 1)
	go func() { out <- c.Authenticate(context.Background(), fault(what)) }()
	return out
}

// When every slot is busy a call waits in the queue and gets the slot when
// it comes free; a call past auth.queue.size is refused at once with
// ErrOverloaded; the waits, the refusal and the depth are measured.
func TestSaturatedPluginQueuesThenRefuses(t *testing.T) {
	const hold = 500 * time.Millisecond
	h, c, reg := saturated(t, hold, config.Queue{Size: 1, MaxWait: 20 * time.Second}, false)
	busy := authAsync(c, "hold:first")
	waitFor(t, 30*time.Second, func() bool { return process(t, h, "fault", 0).InFlight == 1 })
	queued := authAsync(c, "allow:queued")
	waitFor(t, 30*time.Second, func() bool { return gauge(t, reg, `agent_server_auth_queue_depth{plugin="fault"}`) == 1 })

	start := time.Now()
	res := c.Authenticate(context.Background(), fault("allow:overflow"))
	if res.Decision != core.Error || !errors.Is(res.Err, core.ErrOverloaded) || !strings.Contains(res.Err.Error(), "auth.queue.size") {
		t.Fatalf("a call past the queue: got %s (%v), want an overloaded error naming auth.queue.size", res.Decision, res.Err)
	}
	if took := time.Since(start); took > hold/2 {
		t.Errorf("the refusal took %s: it waited instead of being refused at once", took)
	}
	if res := <-busy; res.Decision != core.Allow || res.Principal.Subject != "first" {
		t.Errorf("the call holding the slot: got %s (%v)", res.Decision, res.Err)
	}
	if res := <-queued; res.Decision != core.Allow || res.Principal.Subject != "queued" {
		t.Errorf("the queued call: got %s (%v), want allow once the slot came free", res.Decision, res.Err)
	}
	for series, want := range map[string]float64{
		`agent_server_auth_queue_depth{plugin="fault"}`:                             0,
		`agent_server_auth_queue_wait_seconds{plugin="fault"}`:                      1, // the queued call's wait
		`agent_server_auth_queue_rejections_total{plugin="fault",reason="full"}`:    1,
		`agent_server_auth_queue_rejections_total{plugin="fault",reason="timeout"}`: 0,
	} {
		if got := gauge(t, reg, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// A call that waits longer than auth.queue.max_wait is refused with
// ErrOverloaded, long before the slot's call ends.
func TestQueueWaitIsBounded(t *testing.T) {
	const hold = time.Minute
	h, c, reg := saturated(t, hold, config.Queue{Size: 10, MaxWait: 50 * time.Millisecond}, false)
	authAsync(c, "hold:first")
	waitFor(t, 30*time.Second, func() bool { return process(t, h, "fault", 0).InFlight == 1 })
	start := time.Now()
	res := c.Authenticate(context.Background(), fault("allow:late"))
	if res.Decision != core.Error || !errors.Is(res.Err, core.ErrOverloaded) || !strings.Contains(res.Err.Error(), "auth.queue.max_wait") {
		t.Fatalf("got %s (%v), want an overloaded error naming auth.queue.max_wait", res.Decision, res.Err)
	}
	if took := time.Since(start); took > hold/2 {
		t.Errorf("refused after %s: it waited for the slot, not for max_wait", took)
	}
	if got := gauge(t, reg, `agent_server_auth_queue_rejections_total{plugin="fault",reason="timeout"}`); got != 1 {
		t.Errorf("timeout rejections = %v, want 1", got)
	}
}

// Saturation never holds up what needs no call: a decision the cache holds
// is answered while every slot is busy.
func TestCachedDecisionsSkipTheQueue(t *testing.T) {
	h, c, _ := saturated(t, time.Minute, config.Queue{Size: 0, MaxWait: time.Second}, true)
	if res := c.Authenticate(context.Background(), fault("allow:cached")); res.Decision != core.Allow {
		t.Fatalf("priming the cache: got %s (%v)", res.Decision, res.Err)
	}
	authAsync(c, "hold:first")
	waitFor(t, 30*time.Second, func() bool { return process(t, h, "fault", 0).InFlight == 1 })
	if res := c.Authenticate(context.Background(), fault("allow:cached")); res.Decision != core.Allow || !res.Cached {
		t.Errorf("a cached credential while saturated: got %s cached=%v (%v), want a cached allow", res.Decision, res.Cached, res.Err)
	}
	if res := c.Authenticate(context.Background(), fault("allow:new")); !errors.Is(res.Err, core.ErrOverloaded) {
		t.Errorf("a new credential with no queue: got %s (%v), want overloaded at once", res.Decision, res.Err)
	}
}

// Calls waiting for a slot fail at once when the plugin's last process
// dies: no slot will come free before a restart.
func TestWaitersFailWhenThePluginGoesDown(t *testing.T) {
	cfg := headerFault(t, 1, time.Minute)
	cfg.Plugins.MaxInFlight = 1
	cfg.Auth.Queue = config.Queue{Size: 10, MaxWait: 9 * time.Second}
	cfg.Plugins.Restart.InitialBackoff = 30 * time.Second // keep it down while the test looks
	cfg.Plugins.Restart.MaxBackoff = 30 * time.Second
	h, reg := startMeasuredHost(t, cfg)
	c := chain(t, h, core.RouteREST)
	authAsync(c, "hold:first")
	waitFor(t, 30*time.Second, func() bool { return process(t, h, "fault", 0).InFlight == 1 })
	waiting := authAsync(c, "allow:waiting")
	// Queued before the kill, so that what fails it is processDown, not
	// the plugin being down when it arrives.
	waitFor(t, 30*time.Second, func() bool { return gauge(t, reg, `agent_server_auth_queue_depth{plugin="fault"}`) == 1 })
	start := time.Now()
	if err := syscall.Kill(process(t, h, "fault", 0).PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res := <-waiting
	if res.Decision != core.Error || errors.Is(res.Err, core.ErrOverloaded) {
		t.Fatalf("a waiter when the plugin died: got %s (%v), want a plugin-down error", res.Decision, res.Err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("the waiter failed %s after the crash: it waited out max_wait", took)
	}
}
