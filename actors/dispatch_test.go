package actors

import (
	"sync"
	"testing"
	"time"
)

// idleCount is how many goroutines wait in d's pool.
func (d *dispatcher) idleCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.idle)
}

// waitIdle waits until d's pool holds n goroutines.
func waitIdle(t *testing.T, d *dispatcher, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); d.idleCount() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines idle, want %d", d.idleCount(), n)
		}
	}
}

// Runs one after another reuse one goroutine; concurrent runs each get
// one, and all of them wait in the pool afterwards, up to its bound.
func TestDispatcherReusesGoroutines(t *testing.T) {
	d := newDispatcher(mailboxThroughput)
	defer d.close()
	for i := range 20 {
		done := make(chan struct{})
		d.Schedule(func() { close(done) })
		<-done
		waitIdle(t, d, 1) // the same goroutine, back in the pool
		if i == 0 && d.Throughput() != mailboxThroughput {
			t.Errorf("throughput %d, want %d", d.Throughput(), mailboxThroughput)
		}
	}
	const n = maxIdleWorkers + 10
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(n)
	for range n {
		d.Schedule(func() { started.Done(); <-release })
	}
	started.Wait() // every run got a goroutine while the others were busy
	close(release)
	waitIdle(t, d, maxIdleWorkers)
}

// Goroutines idle longer than the timeout end; close ends the rest, and
// runs scheduled after it still happen.
func TestDispatcherEndsIdleGoroutines(t *testing.T) {
	d := newDispatcher(mailboxThroughput)
	release := make(chan struct{})
	var ran sync.WaitGroup
	ran.Add(3)
	for range 3 {
		d.Schedule(func() { <-release; ran.Done() })
	}
	close(release)
	ran.Wait()
	waitIdle(t, d, 3)
	d.endIdle(time.Now().Add(-time.Hour)) // none idled that long
	if got := d.idleCount(); got != 3 {
		t.Errorf("%d idle after ending those idle for an hour, want 3", got)
	}
	d.endIdle(time.Now().Add(time.Hour))
	if got := d.idleCount(); got != 0 {
		t.Errorf("%d idle after ending every idle one, want 0", got)
	}
	d.Schedule(func() {})
	waitIdle(t, d, 1)
	d.close()
	if got := d.idleCount(); got != 0 {
		t.Errorf("%d idle after close, want 0", got)
	}
	done := make(chan struct{})
	d.Schedule(func() { close(done) })
	<-done
	d.close() // twice is fine
}
