package plugins

import "sync"

// batchWriter sends items over one stream from a goroutine of its own, so
// that no caller ever blocks on the stream (a plugin that stops reading
// fills the HTTP/2 window, and a caller blocked on it would miss its own
// deadline). Each message carries every item queued while the previous one
// was being sent: one item under light load, a batch under a storm, with no
// timer and no added latency. Both ends of protocol 3 use it, the host for
// calls and the SDK for replies.
type batchWriter[T any] struct {
	send   func([]T) error // sends one batch; never called concurrently
	failed func(error)     // told once when send fails; the writer then stops
	wake   chan struct{}   // cap 1: there is something to send
	done   chan struct{}   // closed by stop
	exited chan struct{}   // closed when the goroutine has returned

	mu    sync.Mutex
	queue []T
	spare []T // the previous batch's slice, reused
}

// newBatchWriter starts the writer's goroutine. send must copy what it
// needs before it returns: the slice is reused.
func newBatchWriter[T any](send func([]T) error, failed func(error)) *batchWriter[T] {
	w := &batchWriter[T]{send: send, failed: failed, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go w.run()
	return w
}

// add queues v for the next batch.
func (w *batchWriter[T]) add(v T) {
	w.mu.Lock()
	w.queue = append(w.queue, v)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *batchWriter[T]) run() {
	defer close(w.exited)
	for {
		select {
		case <-w.done:
			return
		case <-w.wake:
		}
		w.mu.Lock()
		batch := w.queue
		w.queue = w.spare[:0]
		w.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		err := w.send(batch)
		clear(batch) // drop the references the batch held
		w.mu.Lock()
		w.spare = batch
		w.mu.Unlock()
		if err != nil {
			w.failed(err)
			return
		}
	}
}

// stop ends the goroutine and waits for it; what is still queued is
// dropped. It is safe to call more than once.
func (w *batchWriter[T]) stop() {
	w.mu.Lock()
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.mu.Unlock()
	<-w.exited
}
