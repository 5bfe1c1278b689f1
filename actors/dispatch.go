package actors

import (
	"sync"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"
)

// Bounds of the dispatcher's pool of idle goroutines.
const (
	// maxIdleWorkers bounds the goroutines kept waiting for a mailbox to
	// run; one that finishes a run beyond it ends.
	maxIdleWorkers = 256
	// workerIdleTimeout is how long an idle goroutine waits for another
	// run before it ends, so that a quiet server keeps none of them.
	workerIdleTimeout = 2 * time.Second
)

// dispatcher runs actors' mailboxes, and the authenticator chains' runs,
// on goroutines that outlive one run. protoactor's default dispatcher
// starts a goroutine for every run, that is every time a message reaches
// an idle actor, and each of those goroutines starts on a small stack that
// the actor's Receive grows by copying it, a few times per run: in
// BenchmarkConnect half the CPU went to stack growth. A pooled goroutine
// starts on a stack grown in one copy (workerStack); one that has run a
// mailbox waits, LIFO, for the next: the most recently used (its stack and
// caches warm) runs the next mailbox. One that waits longer than
// workerIdleTimeout, or would be the idle pool's maxIdleWorkers+1th, ends.
// A mailbox run never waits for a goroutine: with none idle, a new one
// starts. Mailbox semantics are protoactor's: one run at a time per actor,
// Throughput messages before it yields.
type dispatcher struct {
	throughput int

	mu      sync.Mutex
	idle    []*worker // idle[len-1] idled last
	stopped bool
	stop    chan struct{}
	done    chan struct{}
}

// worker is one pooled goroutine: it takes its next run from work.
type worker struct {
	work      chan func() // a nil func ends it
	idleSince time.Time
}

// newDispatcher starts a dispatcher with protoactor's throughput per run
// and the janitor that ends idle goroutines.
func newDispatcher(throughput int) *dispatcher {
	d := &dispatcher{throughput: throughput, stop: make(chan struct{}), done: make(chan struct{})}
	go d.janitor()
	return d
}

// Schedule runs fn on an idle pooled goroutine, or on a new one.
func (d *dispatcher) Schedule(fn func()) {
	d.mu.Lock()
	if n := len(d.idle); n > 0 {
		w := d.idle[n-1]
		d.idle[n-1] = nil
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		w.work <- fn // it waits on work with room for one: never blocks
		return
	}
	d.mu.Unlock()
	go d.run(&worker{work: make(chan func(), 1)}, fn)
}

// workerStack is what a new pooled goroutine grows its stack to, in one
// copy of its nearly empty stack, before its first run. A handshake's run
// (the request's parse, the upgrade, the attach) needs more than 4 KiB of
// stack and less than 8, and a goroutine starts on Go's smallest stack: a
// new one copied its stack twice on the way, each copy walking every frame
// of a deep stack. In a reconnect storm, where nearly every run finds the
// pool empty, that was 6-7% of the server's CPU.
//
// A waiting goroutine does not hold on to its stack: the collector halves
// the stack of one that waits using less than a quarter of it, and it
// grows again on its next deep run. Keeping it (by waiting in a frame of
// more than 2 KiB) cost more than the copies it saved: Go starts every new
// goroutine on the average stack in use at the last collection, and 256
// such waiters raised it past 2 KiB, so that each idle socket's read loop
// started, and stayed, on 4 KiB (1.5 KiB more per idle connection,
// `agent-bench -scenario idle`), while the storm's time did not change.
const workerStack = 8 << 10

// growStack makes its goroutine's stack at least workerStack: its frame
// needs more than half of that, so the runtime grows the stack to the
// next power of two that holds it, copying only the frames under it.
//
//go:noinline
func growStack() {
	var frame [workerStack/2 + 1<<10]byte
	keepFrame(frame[:])
}

// keepFrame keeps a frame's array from being optimised away.
//
//go:noinline
func keepFrame(b []byte) { _ = unsafe.SliceData(b) }

// Throughput is how many messages a mailbox run handles before it yields.
func (d *dispatcher) Throughput() int { return d.throughput }

// run is a pooled goroutine: it runs fn, then waits for more.
func (d *dispatcher) run(w *worker, fn func()) {
	growStack()
	for fn != nil {
		fn()
		now := time.Now()
		d.mu.Lock()
		if d.stopped || len(d.idle) >= maxIdleWorkers {
			d.mu.Unlock()
			return
		}
		w.idleSince = now
		d.idle = append(d.idle, w)
		d.mu.Unlock()
		fn = <-w.work
	}
}

// janitor ends the goroutines idle longer than workerIdleTimeout, once a
// second, until close.
func (d *dispatcher) janitor() {
	defer close(d.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case now := <-t.C:
			d.endIdle(now.Add(-workerIdleTimeout))
		}
	}
}

// endIdle ends the idle goroutines that idled before cutoff: the oldest,
// at the front.
func (d *dispatcher) endIdle(cutoff time.Time) {
	d.mu.Lock()
	n := 0
	for n < len(d.idle) && d.idle[n].idleSince.Before(cutoff) {
		n++
	}
	old := make([]*worker, n)
	copy(old, d.idle[:n])
	rest := copy(d.idle, d.idle[n:])
	clear(d.idle[rest:])
	d.idle = d.idle[:rest]
	if len(d.idle) == 0 {
		d.idle = nil // a burst's slice goes too
	}
	d.mu.Unlock()
	for _, w := range old {
		w.work <- nil
	}
}

// close ends every idle goroutine and the janitor; goroutines still running
// a mailbox end when their run does. Schedule keeps working after close,
// on a new goroutine each time (the actor system's last messages).
func (d *dispatcher) close() {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.stopped = true
	idle := d.idle
	d.idle = nil
	d.mu.Unlock()
	close(d.stop)
	<-d.done
	for _, w := range idle {
		w.work <- nil
	}
}

var _ actor.Dispatcher = (*dispatcher)(nil)
