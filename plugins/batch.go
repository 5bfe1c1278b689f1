package plugins

import (
	"runtime"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
)

// Message sizes on the stream. A gRPC server refuses a message larger
// than it allows, 4 MiB by default, and on the Stream a refused message
// ends the whole stream, failing every call in flight on it: one batch of
// too many large calls would cost every caller their answer and the
// process a restart. So a batch is cut at maxBatchBytes (an item alone may
// be larger), and the host refuses a request larger than maxCallBytes
// before it is queued: a plugin built with an older SDK still receives at
// most gRPC's default. (The host receives whatever size a plugin sends:
// go-plugin's client lifts gRPC's limit.)
const (
	// maxBatchBytes is the size past which a batch is cut: the items
	// that fit go in one message, the rest in the next ones.
	maxBatchBytes = 1 << 20
	// maxCallBytes is the largest encoded request the host sends a
	// plugin: 64 KiB below gRPC's default 4 MiB, for the call's other
	// fields and the envelope.
	maxCallBytes = 4<<20 - 64<<10
	// maxRecvBytes is what Serve lets a plugin receive, above anything a
	// host sends (defense in depth).
	maxRecvBytes = 16 << 20
)

// batchWriter sends items over one stream, each message carrying every
// item queued while the previous one was being sent: one item under light
// load, a batch under a storm, with no timer and no added latency. Both
// ends of protocols 3 and 4 use it, the host for calls and the SDK for replies.
//
// A batch is cut at maxBatchBytes, counting each item's encoded size in
// the message (its size func plus the field's envelope), so that no
// message exceeds what the other end may receive; an item larger than that
// goes alone.
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
	size   func(T) int     // an item's encoded size, as add was told it
	wake   chan struct{}   // cap 1: there is something to send; nil inline
	done   chan struct{}   // closed by stop
	exited chan struct{}   // closed when the goroutine has returned

	mu      sync.Mutex
	queue   []T
	bytes   int  // the queue's encoded size in one message
	spare   []T  // the previous batch's slice, reused
	sending bool // inline: a caller is sending
	broken  bool // send failed or stop was called: nothing more is sent
}

// newBatchWriter starts the writer's goroutine. send must copy what it
// needs before it returns: the slice is reused. size returns an item's
// encoded size, as add was told it; it is called only to cut a batch.
func newBatchWriter[T any](send func([]T) error, failed func(error), size func(T) int) *batchWriter[T] {
	w := &batchWriter[T]{send: send, failed: failed, size: size, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go w.run()
	return w
}

// newInlineBatchWriter returns a writer whose callers send.
func newInlineBatchWriter[T any](send func([]T) error, failed func(error), size func(T) int) *batchWriter[T] {
	w := &batchWriter[T]{send: send, failed: failed, size: size, done: make(chan struct{}), exited: make(chan struct{})}
	close(w.exited)
	return w
}

// entrySize is what an item of encoded size n adds to its batch's message:
// the repeated field's tag and length, and the item.
func entrySize(n int) int { return protowire.SizeTag(1) + protowire.SizeBytes(n) }

// add queues v, whose encoded size is size, for the next batch, and sends
// it when the writer is inline and nobody is sending.
func (w *batchWriter[T]) add(v T, size int) {
	n := entrySize(size)
	w.mu.Lock()
	w.queue = append(w.queue, v)
	w.bytes += n
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

// flushLocked sends what is queued, at most maxBatchBytes of it (at least
// one item), unlocking w.mu meanwhile. It reports whether it sent anything
// and the writer still works: the caller calls it again for the rest.
func (w *batchWriter[T]) flushLocked() bool {
	batch := w.queue
	if len(batch) == 0 || w.broken {
		return false
	}
	n := len(batch)
	if w.bytes > maxBatchBytes { // rare: sizes are counted again only here
		n = w.cut(batch)
	}
	if n == len(batch) {
		w.queue, w.spare, w.bytes = w.spare[:0], nil, 0
	} else {
		w.queue, w.spare = append(w.spare[:0], batch[n:]...), nil
	}
	w.mu.Unlock()
	err := w.send(batch[:n])
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

// cut returns how many leading items of batch fit in maxBatchBytes, at
// least one, and takes their size off w.bytes.
func (w *batchWriter[T]) cut(batch []T) int {
	total := 0
	for k, v := range batch {
		n := entrySize(w.size(v))
		if k > 0 && total+n > maxBatchBytes {
			w.bytes -= total
			return k
		}
		total += n
	}
	w.bytes -= total
	return len(batch)
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
