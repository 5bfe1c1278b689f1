package actors

import (
	"runtime/debug"
	"sync"
	"testing"
	"time"
	"unsafe"
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

// stackAt is where its frame is on the calling goroutine's stack, which
// moves when the runtime copies the stack to grow or shrink it.
//
//go:noinline
func stackAt() uintptr {
	var here byte
	return uintptr(unsafe.Pointer(&here))
}

// deepCall needs more than 4 KiB of stack below its caller's frame, as a
// handshake's run does.
//
//go:noinline
func deepCall(n int) {
	var frame [1 << 10]byte
	keepFrame(frame[:])
	if n > 0 {
		deepCall(n - 1)
	}
}

// A pooled goroutine's stack has its working size before the first run: a
// run as deep as a handshake never copies it, on a new goroutine (before,
// it was copied twice) or on the same one reused. The collector is off
// meanwhile: it may halve a waiting goroutine's stack (dispatch.go,
// workerStack), and one that ran between the runs would move it.
func TestDispatcherStacksStayPut(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	d := newDispatcher(mailboxThroughput)
	defer d.close()
	// run schedules a run that goes deep and reports where its frame was
	// before and after.
	run := func() (before, after uintptr) {
		done := make(chan struct{})
		d.Schedule(func() {
			before = stackAt()
			deepCall(4)
			after = stackAt()
			close(done)
		})
		<-done
		return before, after
	}
	tests := []struct {
		name string
	}{
		{"a new goroutine"},
		{"the same goroutine, reused"},
	}
	var last uintptr
	for i, tt := range tests {
		before, after := run()
		if before != after {
			t.Errorf("%s: the stack moved during the run (frame at %#x, then %#x)", tt.name, before, after)
		}
		if i > 0 && before != last {
			t.Errorf("%s: the stack moved between runs (frame at %#x, then %#x)", tt.name, last, before)
		}
		last = after
		waitIdle(t, d, 1) // the same goroutine runs the next
	}
}
