// Package linewriter group-commits log lines: a Writer takes whole lines
// (one per Write call, as slog's handlers and the audit log write them)
// into a pending buffer and one background goroutine, the flusher, writes
// everything pending to the underlying io.Writer in one Write. A busy
// server's lines go out many to a syscall, instead of one syscall (and one
// wakeup of whoever reads the pipe) each; a quiet server's line goes out as
// soon as the flusher is scheduled, with no timer and no periodic tick.
// Write makes no syscall, except as a batch's leader (see leadAfter) and
// after Close.
//
// What it promises:
//   - Each Write's bytes stay contiguous, and lines keep the order in which
//     their Write calls returned: a line is never split or interleaved.
//   - Memory is bounded: once the pending bytes would pass the limit
//     (DefaultLimit, 1 MiB), Write blocks until the flusher has drained them
//     (backpressure from a slow reader of stderr or a stuck disk). A line is
//     never dropped to make room, and the buffer never grows past the limit
//     plus one line.
//   - A line the underlying writer fails to take is counted (Failed, and a
//     Source's Failed for the lines written through it), never silently lost.
//   - The output never holds a torn line (the head of one line followed by
//     another), which a log pipeline reading lines would take for one
//     garbled record or two broken ones. When the underlying writer takes
//     only part of a batch (a short write, or an error after some bytes),
//     it is asked again for the rest while each call takes something. If it
//     stops mid-line, the lines of the batch after that one are dropped
//     whole and counted, and the rest of that line is kept: it is written
//     first, before any other byte, as soon as the writer takes bytes again
//     (the next batch, Close, a Write after Close). A next batch the rest
//     of the line still cannot precede is dropped whole and counted. The
//     line is counted as lost only if Close (or SetOutput, for the old
//     output) cannot finish it; its head is then the last thing in that
//     output.
//   - Flush and Close return once every line accepted before them has been
//     handed to the underlying writer, or when their context ends; a stuck
//     writer does not hold them forever, and the lines it holds up are still
//     written if it ever resumes.
//
// What it gives up: a line that Write has accepted but the flusher has not
// written yet is lost if the process is killed (SIGKILL) or crashes. The
// window is about a millisecond (leadAfter) while lines keep coming. That
// is the same bargain the kernel's page cache makes for a
// log file, which a crash of the machine loses too; nothing is lost on a
// clean shutdown (the server flushes before it exits) or on a panic that
// the server recovers.
package linewriter

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultLimit is the pending bytes past which Write blocks: a second or
// more of a busy server's log lines.
const DefaultLimit = 1 << 20

// How long lines wait for the flusher before a Write writes them itself.
// The flusher yields before it writes (see run), and on a saturated P a
// yielded goroutine can wait on the global run queue for hundreds of
// milliseconds: once the oldest pending line is leadAfter old, or
// leadBytes are pending, the Write that finds them takes the batch and
// writes it (a group commit's leader). That bounds how long an accepted
// line stays in memory while the server is busy, and so what a crash
// loses, to about a millisecond.
const (
	leadAfter = time.Millisecond
	leadBytes = 64 << 10
)

// Writer is a group-committing io.Writer; New starts its flusher and Close
// stops it. It is safe for concurrent use.
type Writer struct {
	limit int
	now   func() time.Time // time.Now; a test's clock
	wake  chan struct{}    // 1-buffered: lines are pending
	quit  chan struct{}    // closed by Close
	done  chan struct{}    // closed when the flusher has returned
	once  sync.Once        // closes quit
	lost  atomic.Int64     // lines the underlying writer failed to take, from every source

	mu       sync.Mutex
	out      io.Writer
	pending  []byte
	lines    []line // one per Write in pending
	spare    []byte // the buffers the flusher wrote last, for reuse
	spareL   []line
	accepted uint64        // Write calls taken into pending, ever
	written  uint64        // of those, the ones handed to out (taken or failed)
	progress chan struct{} // closed when a batch is done; made by whoever waits
	since    time.Time     // when the oldest pending line was accepted
	blocked  int           // Write calls waiting for room (tests read it)
	writing  bool          // the flusher is writing a batch to out
	stopped  bool          // the flusher has returned: Write goes straight to out

	// torn is the rest of a line whose head the output took: it goes out
	// before anything else (see the package doc). tornSource is its
	// line's source.
	torn       []byte
	tornSource *atomic.Int64

	direct sync.Mutex // orders the Writes that go straight to out once stopped
}

// line is one Write call in a batch: where it ends and whose it is.
type line struct {
	end    int
	source *atomic.Int64 // the Source's lost-line count; nil for the Writer's own Write
}

// New returns a Writer that writes to out, blocking writers once more than
// limit bytes are pending (limit <= 0 means DefaultLimit), and starts its
// flusher. Close it to write what is pending and stop the flusher.
func New(out io.Writer, limit int) *Writer {
	w := newWriter(out, limit)
	go w.run()
	return w
}

// newWriter returns a Writer whose flusher is not started.
func newWriter(out io.Writer, limit int) *Writer {
	if limit <= 0 {
		limit = DefaultLimit
	}
	return &Writer{
		limit: limit,
		out:   out,
		now:   time.Now,
		wake:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
}

// Write takes a copy of p, which should be one whole line, for the flusher
// to write; it blocks while the pending bytes are over the limit. It makes
// no syscall itself, except when the flusher has left lines pending past
// leadAfter (it then writes the batch, p included, as the flusher would)
// and after Close, when it writes p straight to the underlying writer and
// returns its error. Otherwise it returns len(p) and nil once p is
// accepted: a later failure to write it is counted by Failed.
func (w *Writer) Write(p []byte) (int, error) { return w.write(p, nil) }

// Failed returns how many accepted lines (Write calls), from the Writer and
// all its Sources, the underlying writer failed to take.
func (w *Writer) Failed() int64 { return w.lost.Load() }

func (w *Writer) write(p []byte, source *atomic.Int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w.mu.Lock()
	for !w.stopped && len(w.pending) > 0 && len(w.pending)+len(p) > w.limit {
		w.blocked++
		w.waitBatchLocked()
		w.blocked--
	}
	if w.stopped {
		w.mu.Unlock()
		return w.writeDirect(p)
	}
	wasEmpty := len(w.pending) == 0
	w.pending = append(w.pending, p...)
	w.lines = append(w.lines, line{end: len(w.pending), source: source})
	w.accepted++
	switch {
	case wasEmpty:
		w.since = w.now()
		select {
		case w.wake <- struct{}{}:
		default: // the flusher has a wakeup already
		}
	case !w.writing && (len(w.pending) >= leadBytes || w.now().Sub(w.since) >= leadAfter):
		w.writeBatchLocked() // the flusher has waited long enough: lead
	}
	w.mu.Unlock()
	return len(p), nil
}

// writeDirect writes p to the underlying writer, after Close: first the
// rest of a torn line, if any, then p. A p the writer takes only in part
// leaves its rest torn, for the next Write to finish first.
func (w *Writer) writeDirect(p []byte) (int, error) {
	w.direct.Lock()
	defer w.direct.Unlock()
	w.mu.Lock()
	out, torn := w.out, w.torn
	w.mu.Unlock()
	if len(torn) > 0 {
		k, err := writeAll(out, torn)
		w.mu.Lock()
		w.torn = torn[k:]
		w.mu.Unlock()
		if k < len(torn) {
			// refused, not accepted: not counted
			return 0, fmt.Errorf("write line: finish the line an earlier write tore: %w", err)
		}
	}
	n, err := writeAll(out, p)
	if err != nil {
		if n > 0 {
			w.mu.Lock()
			w.torn, w.tornSource = append([]byte(nil), p[n:]...), nil
			w.mu.Unlock()
		}
		return n, fmt.Errorf("write line: %w", err) // refused, not accepted: not counted
	}
	return n, nil
}

// writeAll writes p to out, asking again for the rest as long as each
// call takes something. It returns how much was written and, when that is
// not all of p, the last call's error (io.ErrShortWrite when it had none).
func writeAll(out io.Writer, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := out.Write(p[n:])
		n += min(max(k, 0), len(p)-n)
		if k <= 0 {
			if err == nil {
				err = io.ErrShortWrite
			}
			return n, err
		}
	}
	return n, nil
}

// waitBatchLocked releases w.mu until the flusher finishes a batch, then
// takes it again.
func (w *Writer) waitBatchLocked() {
	ch := w.progressLocked()
	w.mu.Unlock()
	<-ch
	w.mu.Lock()
}

// progressLocked returns the channel closed when the current batch is done.
func (w *Writer) progressLocked() chan struct{} {
	if w.progress == nil {
		w.progress = make(chan struct{})
	}
	return w.progress
}

// run is the flusher: it writes all that is pending in one Write, each
// time it is woken, until Close and nothing is left.
func (w *Writer) run() {
	defer close(w.done)
	finished := false // Close's attempt at a torn line is made
	for {
		select {
		case <-w.wake:
			// A Write's wakeup makes the flusher the next goroutine its P
			// runs (the runtime's runnext), so on a busy P it would write
			// each line alone. One yield puts it behind the goroutines
			// already runnable, whose lines it then takes in the same
			// write; on an idle P the yield returns at once, and on a
			// saturated one a Write leads past leadAfter.
			runtime.Gosched()
		case <-w.quit:
		}
		w.mu.Lock()
		for w.writing { // a Write is leading a batch
			w.waitBatchLocked()
		}
		if len(w.pending) == 0 {
			select {
			case <-w.quit:
				if len(w.torn) > 0 && !finished {
					// Close finishes a torn line if the output takes it.
					finished = true
					w.finishTornLocked()
					w.mu.Unlock()
					continue
				}
				w.stopped = true
				w.notifyLocked()
				w.mu.Unlock()
				return
			default:
			}
			w.mu.Unlock()
			continue
		}
		w.writeBatchLocked()
		w.mu.Unlock()
	}
}

// writeBatchLocked, called with w.mu held, no batch being written and
// lines pending, writes them all in one Write to the output (after the rest
// of a torn line), with w.mu released meanwhile, and counts the lines the
// output did not take. A line the output took only the head of is torn:
// its rest is kept for the next write.
func (w *Writer) writeBatchLocked() {
	buf, lines, out, torn := w.pending, w.lines, w.out, w.torn
	w.pending, w.lines = w.spare[:0], w.spareL[:0]
	w.writing = true
	w.mu.Unlock()

	n := 0 // of buf, written
	if len(torn) > 0 {
		k, _ := writeAll(out, torn)
		torn = torn[k:]
	}
	if len(torn) == 0 {
		n, _ = writeAll(out, buf)
	}
	var rest []byte
	var restSource *atomic.Int64
	start := 0
	for _, l := range lines {
		switch {
		case l.end <= n: // written whole
		case start < n: // its head is out: its rest goes first next time
			rest, restSource = append([]byte(nil), buf[n:l.end]...), l.source
		default:
			w.countLost(l.source)
		}
		start = l.end
	}

	w.mu.Lock()
	if len(torn) == 0 {
		w.torn, w.tornSource = rest, restSource
	} else {
		w.torn = torn // still not finished: the whole batch was dropped
	}
	w.written += uint64(len(lines))
	w.writing = false
	clear(lines) // drop the Source pointers
	w.spare, w.spareL = buf[:0], lines[:0]
	w.since = w.now() // what is pending now arrived during the write
	w.notifyLocked()
}

// finishTornLocked, called with w.mu held and no batch being written, tries
// once to write the rest of the torn line, with w.mu released meanwhile,
// and counts the line lost if the output does not take it all.
func (w *Writer) finishTornLocked() {
	torn, source, out := w.torn, w.tornSource, w.out
	w.writing = true
	w.mu.Unlock()
	k, _ := writeAll(out, torn)
	if k < len(torn) {
		w.countLost(source)
	}
	w.mu.Lock()
	w.torn = torn[k:]
	w.writing = false
	w.notifyLocked()
}

// notifyLocked wakes whoever waits for the flusher.
func (w *Writer) notifyLocked() {
	if w.progress != nil {
		close(w.progress)
		w.progress = nil
	}
}

// countLost counts one line lost, in all and for its source.
func (w *Writer) countLost(source *atomic.Int64) {
	w.lost.Add(1)
	if source != nil {
		source.Add(1)
	}
}

// Flush waits until every line accepted before the call has been handed to
// the underlying writer, or until ctx ends (a stuck writer); the lines stay
// pending then, and are written if the writer resumes.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.waitWrittenLocked(ctx, w.accepted, false); err != nil {
		return fmt.Errorf("flush lines: %w", err)
	}
	return nil
}

// SetOutput sends the lines accepted from now on to out, once the lines
// accepted before the call have been written to the current output (see
// Flush) and no Write to it is under way: when it returns nil, nothing
// writes to the old output any more and its caller may close it. When ctx
// ends first (the old output is stuck), the output is not changed.
func (w *Writer) SetOutput(ctx context.Context, out io.Writer) error {
	w.direct.Lock() // no Write after Close is writing to the old one
	defer w.direct.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.waitWrittenLocked(ctx, w.accepted, true); err != nil {
		return fmt.Errorf("keep the old output: %w", err)
	}
	if len(w.torn) > 0 {
		// The old output owes the rest of a line: one last try, then the
		// new output starts clean.
		w.finishTornLocked()
		w.torn, w.tornSource = nil, nil
	}
	w.out = out
	return nil
}

// waitWrittenLocked, called with w.mu held, waits until the first target
// accepted lines have been written and, when idle, no batch is being
// written, or until ctx ends.
func (w *Writer) waitWrittenLocked(ctx context.Context, target uint64, idle bool) error {
	for w.written < target || idle && w.writing {
		ch := w.progressLocked()
		w.mu.Unlock()
		select {
		case <-ch:
			w.mu.Lock()
		case <-ctx.Done():
			w.mu.Lock()
			return fmt.Errorf("%d lines not written yet: %w", target-min(target, w.written), ctx.Err())
		}
	}
	return nil
}

// Close writes every accepted line and stops the flusher, or returns when
// ctx ends (a stuck writer: the flusher then keeps going in the background
// and writes the pending lines if the writer resumes). A Write after Close
// goes straight to the underlying writer. Close may be called again, e.g.
// with a longer deadline.
func (w *Writer) Close(ctx context.Context) error {
	w.once.Do(func() { close(w.quit) })
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.mu.Lock()
		n := w.accepted - w.written
		w.mu.Unlock()
		return fmt.Errorf("close line writer: %d lines not written yet: %w", n, ctx.Err())
	}
}

// Source is an io.Writer into a Writer that counts the lines written
// through it that were then lost, apart from the Writer's other writers':
// the audit log and the server's log share stderr, and each counts its own.
type Source struct {
	w    *Writer
	lost atomic.Int64
}

// Source returns a new Source writing into w.
func (w *Writer) Source() *Source { return &Source{w: w} }

// Write is the Writer's Write, for this Source.
func (s *Source) Write(p []byte) (int, error) { return s.w.write(p, &s.lost) }

// Failed returns how many accepted lines of this Source the underlying
// writer failed to take.
func (s *Source) Failed() int64 { return s.lost.Load() }

var (
	_ io.Writer = (*Writer)(nil)
	_ io.Writer = (*Source)(nil)
)
