package plugins

import (
	"runtime"
	"sync"
)

// batchWriter sends items over one stream, each message carrying every
// item queued while the previous one was being sent: one item under light
// load, a batch under a storm, with no timer and no added latency. Both
// ends of protocol 3 use it, the host for calls and the SDK for replies.
//
// A writer sends from a goroutine of its own (newBatchWriter), so that no
// caller ever blocks on the stream: a plugin that stops reading fills the
// HTTP/2 window, and a caller blocked on it would miss its own deadline.
// An inline writer (newInlineBatchWriter) has the caller that finds nobody
// sending send itself, the items others queue meanwhile included: one
// goroutine hand-off fewer, for a side whose callers may wait on the
// stream.
type batchWriter[T any] struct {
	send   func([]T) error // sends one batch; never called concurrently
	failed func(error)     // told once when send fails; the writer then stops
	wake   chan struct{}   // cap 1: there is something to send; nil inline
	done   chan struct{}   // closed by stop
	exited chan struct{}   // closed when the goroutine has returned

	mu      sync.Mutex
	queue   []T
	spare   []T  // the previous batch's slice, reused
	sending bool // inline: a caller is sending
	broken  bool // send failed or stop was called: nothing more is sent
}

// newBatchWriter starts the writer's goroutine. send must copy what it
// needs before it returns: the slice is reused.
func newBatchWriter[T any](send func([]T) error, failed func(error)) *batchWriter[T] {
	w := &batchWriter[T]{send: send, failed: failed, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go w.run()
	return w
}

// newInlineBatchWriter returns a writer whose callers send.
func newInlineBatchWriter[T any](send func([]T) error, failed func(error)) *batchWriter[T] {
	w := &batchWriter[T]{send: send, failed: failed, done: make(chan struct{}), exited: make(chan struct{})}
	close(w.exited)
	return w
}

// add queues v for the next batch, and sends it when the writer is inline
// and nobody is sending.
func (w *batchWriter[T]) add(v T) {
	w.mu.Lock()
	w.queue = append(w.queue, v)
	if w.wake != nil {
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
		return
	}
	if w.sending || w.broken {
		w.mu.Unlock()
		return
	}
	w.sending = true
	w.mu.Unlock()
	runtime.Gosched()
	w.mu.Lock()
	for w.flushLocked() {
	}
	w.sending = false
	w.mu.Unlock()
}

func (w *batchWriter[T]) run() {
	defer close(w.exited)
	for {
		select {
		case <-w.done:
			return
		case <-w.wake:
		}
		runtime.Gosched()
		w.mu.Lock()
		for w.flushLocked() {
		}
		broken := w.broken
		w.mu.Unlock()
		if broken {
			return
		}
	}
}

// flushLocked sends what is queued, unlocking w.mu meanwhile. It reports
// whether it sent anything and the writer still works.
func (w *batchWriter[T]) flushLocked() bool {
	batch := w.queue
	if len(batch) == 0 || w.broken {
		return false
	}
	w.queue, w.spare = w.spare[:0], nil
	w.mu.Unlock()
	err := w.send(batch)
	clear(batch) // drop the references the batch held
	w.mu.Lock()
	w.spare = batch
	if err != nil && !w.broken {
		w.broken = true
		w.mu.Unlock()
		w.failed(err)
		w.mu.Lock()
		return false
	}
	return true
}

// stop ends the goroutine and waits for it; what is still queued is
// dropped. It is safe to call more than once.
func (w *batchWriter[T]) stop() {
	w.mu.Lock()
	w.broken = true
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.mu.Unlock()
	<-w.exited
}
