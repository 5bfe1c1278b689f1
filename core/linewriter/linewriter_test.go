package linewriter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sink is the fake underlying writer: it records every Write call, holds
// each one while its gate is shut, and fails the calls fail says to.
type sink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	calls   int
	biggest int // the largest Write, in bytes
	gate    chan struct{}
	entered chan struct{} // a value when a Write reaches the gate
	fail    func(call int, p []byte) (int, error)
}

// newGatedSink returns a sink whose Writes wait until release.
func newGatedSink() *sink {
	return &sink{gate: make(chan struct{}), entered: make(chan struct{}, 100)}
}

func (s *sink) Write(p []byte) (int, error) {
	if s.gate != nil {
		select {
		case s.entered <- struct{}{}:
		default: // nobody is counting
		}
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.biggest = max(s.biggest, len(p))
	n, err := len(p), error(nil)
	if s.fail != nil {
		n, err = s.fail(s.calls, p)
	}
	s.buf.Write(p[:n])
	return n, err
}

func (s *sink) release() { close(s.gate) }

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *sink) stats() (calls, biggest int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.biggest
}

func mustClose(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// testLine is goroutine g's line number seq: its payload's letter and
// length follow from g and seq, so a split or mixed line shows.
func testLine(g, seq int) string {
	return fmt.Sprintf("g%03d s%05d %s\n", g, seq, strings.Repeat(string(rune('a'+g%26)), seq*7%150))
}

// Lines from many goroutines come out whole, each goroutine's in the order
// it wrote them, none lost or repeated; with a small limit, no batch is
// bigger than the limit plus a line.
func TestConcurrentLinesStayWholeAndInOrder(t *testing.T) {
	const goroutines, perG = 32, 200
	tests := []struct {
		name  string
		limit int
	}{
		{"default limit", 0},
		{"small limit: writers wait for room", 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := &sink{}
			w := New(out, tt.limit)
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					for seq := range perG {
						if _, err := w.Write([]byte(testLine(g, seq))); err != nil {
							t.Errorf("Write: %v", err)
						}
					}
				})
			}
			wg.Wait()
			mustClose(t, w)

			next := make([]int, goroutines)
			got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			for _, l := range got {
				var g, seq int
				if _, err := fmt.Sscanf(l, "g%03d s%05d", &g, &seq); err != nil || g < 0 || g >= goroutines {
					t.Fatalf("line %q is not one of ours: %v", l, err)
				}
				if want := strings.TrimSuffix(testLine(g, seq), "\n"); l != want {
					t.Fatalf("got line %q, want %q (split or mixed)", l, want)
				}
				if seq != next[g] {
					t.Fatalf("goroutine %d: got line %d, want %d (out of order, lost or repeated)", g, seq, next[g])
				}
				next[g]++
			}
			if len(got) != goroutines*perG {
				t.Errorf("got %d lines, want %d", len(got), goroutines*perG)
			}
			if _, biggest := out.stats(); tt.limit > 0 && biggest > tt.limit+len(testLine(0, 149)) {
				t.Errorf("a batch of %d bytes, want at most the limit %d plus a line", biggest, tt.limit)
			}
		})
	}
}

// While the underlying writer is busy, concurrent lines pile up and go out
// together: 6,400 lines take at most 100 Writes (2 when the first line's
// Write holds the writer while all the others queue).
func TestLinesGoOutManyToAWrite(t *testing.T) {
	const goroutines, perG = 64, 100
	out := newGatedSink()
	w := New(out, 0)
	var wg sync.WaitGroup
	var done atomic.Int32
	for g := range goroutines {
		wg.Go(func() {
			defer done.Add(1)
			for seq := range perG {
				_, _ = w.Write([]byte(testLine(g, seq%10)))
			}
		})
	}
	// While the first batch is held at the gate, every goroutine finishes
	// its Writes but at most one: a Write that led that batch, if the
	// flusher was slow to run. A Writer that writes in every Write gets
	// none of them done.
	for deadline := time.Now().Add(10 * time.Second); done.Load() < goroutines-1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	out.release()
	wg.Wait()
	mustClose(t, w)
	calls, _ := out.stats()
	if lines := strings.Count(out.String(), "\n"); lines != goroutines*perG {
		t.Fatalf("got %d lines, want %d", lines, goroutines*perG)
	}
	// Lines left over after the gate opens may go out in batches led by
	// their own Writes (a millisecond apart), so a few more writes than
	// two; one a line would be 6,400.
	if calls > goroutines*perG/64 {
		t.Errorf("got %d underlying Writes for %d lines, want at most %d", calls, goroutines*perG, goroutines*perG/64)
	}
}

// On one P, as the server runs when pinned to a core, goroutines that each
// write a line and then park (on a socket, a channel) still share writes:
// the flusher, made the P's next goroutine by the first wakeup, yields to
// the others before it writes.
func TestLinesShareWritesOnOneP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const goroutines = 200
	out := &sink{}
	w := New(out, 0)
	start, park := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			<-start
			_, _ = w.Write([]byte(testLine(g, 1)))
			<-park // blocks, as a handshake blocks on its next syscall
		})
	}
	close(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for w.Flush(ctx) == nil && strings.Count(out.String(), "\n") < goroutines {
	}
	close(park)
	wg.Wait()
	mustClose(t, w)
	if calls, _ := out.stats(); calls > goroutines/10 {
		t.Errorf("%d lines took %d underlying Writes on one P, want at most %d", goroutines, calls, goroutines/10)
	}
}

// A Write that finds lines pending for leadAfter, or leadBytes of them,
// writes the batch itself, its own line included: on a saturated P the
// flusher, which yielded to the global run queue, may not run for tens of
// milliseconds. Here the flusher never runs, and the clock is the test's.
func TestAWriteLeadsALateBatch(t *testing.T) {
	tests := []struct {
		name    string
		advance time.Duration // between the first line and the second
		second  int           // the second line's length
		lead    bool
	}{
		{"fresh lines wait for the flusher", leadAfter / 2, 10, false},
		{"a line leadAfter old makes the next Write lead", leadAfter, 10, true},
		{"leadBytes pending make a Write lead", 0, leadBytes, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := &sink{}
			w := newWriter(out, 0)
			now := time.Unix(1000, 0)
			w.now = func() time.Time { return now }
			_, _ = w.Write([]byte("first\n"))
			now = now.Add(tt.advance)
			second := strings.Repeat("x", tt.second-1) + "\n"
			_, _ = w.Write([]byte(second))
			calls, _ := out.stats()
			switch {
			case tt.lead && (calls != 1 || out.String() != "first\n"+second):
				t.Errorf("after the second Write: %d writes of %d bytes, want both lines in one", calls, len(out.String()))
			case !tt.lead && calls != 0:
				t.Errorf("the second Write wrote %d times, want the lines left for the flusher", calls)
			}
		})
	}
}

// Once the pending bytes would pass the limit, Write waits for the flusher
// instead of growing the buffer or dropping the line, and every line is
// written once the underlying writer moves again.
func TestBackpressure(t *testing.T) {
	const limit, writers = 100, 10
	line := strings.Repeat("x", 29) + "\n" // 30 bytes: 3 fit in the limit
	out := newGatedSink()
	w := New(out, limit)
	if _, err := w.Write([]byte("first\n")); err != nil {
		t.Fatal(err)
	}
	<-out.entered // the flusher holds "first" in a stuck Write
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			if _, err := w.Write([]byte(line)); err != nil {
				t.Errorf("Write: %v", err)
			}
		})
	}
	var accepted, blocked, pending int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		w.mu.Lock()
		accepted, blocked, pending = int(w.accepted)-1, w.blocked, len(w.pending)
		w.mu.Unlock()
		if accepted+blocked == writers || time.Now().After(deadline) {
			break
		}
	}
	if accepted != 3 || blocked != writers-3 || pending > limit {
		t.Errorf("with the writer stuck: %d accepted (%d bytes pending), %d waiting; want 3 (at most %d bytes) and %d",
			accepted, pending, blocked, limit, writers-3)
	}
	out.release()
	wg.Wait()
	mustClose(t, w)
	if got, want := out.String(), "first\n"+strings.Repeat(line, writers); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A line longer than the limit is still taken when nothing is pending.
func TestLineOverLimit(t *testing.T) {
	out := &sink{}
	w := New(out, 10)
	long := strings.Repeat("y", 99) + "\n"
	for range 3 {
		if _, err := w.Write([]byte(long)); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, w)
	if got, want := out.String(), strings.Repeat(long, 3); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Flush and Close wait for the lines accepted before them; a stuck
// underlying writer makes them return with ctx's error instead of hanging,
// and the lines it held are written once it moves again.
func TestFlushAndCloseWithAStuckWriter(t *testing.T) {
	tests := []struct {
		name string
		wait func(w *Writer, ctx context.Context) error
	}{
		{"Flush", (*Writer).Flush},
		{"Close", (*Writer).Close},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := newGatedSink()
			w := New(out, 0)
			var want strings.Builder
			for i := range 5 {
				l := fmt.Sprintf("line %d\n", i)
				want.WriteString(l)
				if _, err := w.Write([]byte(l)); err != nil {
					t.Fatal(err)
				}
			}
			<-out.entered
			stopped, cancel := context.WithCancel(context.Background())
			cancel()
			if err := tt.wait(w, stopped); !errors.Is(err, context.Canceled) {
				t.Fatalf("%s with the writer stuck = %v, want context.Canceled", tt.name, err)
			}
			out.release()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tt.wait(w, ctx); err != nil {
				t.Fatalf("%s once the writer moves = %v", tt.name, err)
			}
			// Flush and Close promise the lines are written when they return.
			if got := out.String(); got != want.String() {
				t.Errorf("after %s: got %q, want %q", tt.name, got, want.String())
			}
			mustClose(t, w)
		})
	}
}

// After Close a Write goes straight to the underlying writer, so a line
// logged late in shutdown is not lost, and its error comes back.
func TestWriteAfterClose(t *testing.T) {
	boom := errors.New("disk gone")
	out := &sink{fail: func(call int, p []byte) (int, error) {
		if string(p) == "bad\n" {
			return 0, boom
		}
		return len(p), nil
	}}
	w := New(out, 0)
	_, _ = w.Write([]byte("before\n"))
	mustClose(t, w)
	if _, err := w.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "before\nafter\n" {
		t.Errorf("right after Write: got %q, want both lines", got)
	}
	if _, err := w.Write([]byte("bad\n")); !errors.Is(err, boom) {
		t.Errorf("Write after Close to a failing writer = %v, want %v", err, boom)
	}
	if got := w.Failed(); got != 0 {
		t.Errorf("Failed = %d, want 0 (the caller has the error: counting it too would count it twice)", got)
	}
	mustClose(t, w) // again: no panic, no wait
}

// A failed underlying Write counts every line of its batch it did not
// write whole, against the Writer and the Source that wrote it, and never
// leaves a torn line: the rest of a line the output took the head of goes
// out before the next line (here "e", written after the failed batch), or
// the next line is dropped too. Before, the rest of the line was dropped
// and the next batch appended to its head ("cceeee").
func TestWriteErrorsCounted(t *testing.T) {
	boom := errors.New("EPIPE")
	const b, c, d, e = "bbbb\n", "cccc\n", "dddd\n", "eeee\n" // b and d by one Source, c by another, e by the Writer
	failFrom := func(first func(p []byte) (int, error), then func(call int, p []byte) (int, error)) func(int, []byte) (int, error) {
		return func(call int, p []byte) (int, error) {
			switch {
			case call == 2:
				return first(p)
			case call > 2 && then != nil:
				return then(call, p)
			}
			return len(p), nil
		}
	}
	broken := func(int, []byte) (int, error) { return 0, boom }
	tests := []struct {
		name      string
		fail      func(call int, p []byte) (int, error) // call 2 is the batch b, c, d
		wantOut   string
		wantLost  int64
		wantLost1 int64
		wantLost2 int64
	}{
		{"nothing written", failFrom(func([]byte) (int, error) { return 0, boom }, nil), e, 3, 2, 1},
		{"error after one and a half lines, then the rest taken", failFrom(func([]byte) (int, error) { return len(b) + 2, boom }, nil), b + c + d + e, 0, 0, 0},
		{"short write without an error, then the rest taken", failFrom(func(p []byte) (int, error) { return len(p) - 1, nil }, nil), b + c + d + e, 0, 0, 0},
		{"error after one and a half lines, the retry refused, then the output is back", failFrom(func([]byte) (int, error) { return len(b) + 2, boom },
			func(call int, p []byte) (int, error) {
				if call == 3 {
					return 0, boom
				}
				return len(p), nil
			}), b + c + e, 1, 1, 0},
		{"error after one and a half lines, then the output is gone", failFrom(func([]byte) (int, error) { return len(b) + 2, boom }, broken), b + "cc", 3, 1, 1},
		{"all written", failFrom(func(p []byte) (int, error) { return len(p), nil }, nil), b + c + d + e, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := newGatedSink()
			out.fail = tt.fail
			w := New(out, 0)
			s1, s2 := w.Source(), w.Source()
			_, _ = w.Write([]byte("a\n"))
			<-out.entered // "a" is the first batch; b, c and d the second
			_, _ = s1.Write([]byte(b))
			_, _ = s2.Write([]byte(c))
			_, _ = s1.Write([]byte(d))
			out.release()
			if err := w.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, _ = w.Write([]byte(e))
			mustClose(t, w)
			if got, want := out.String(), "a\n"+tt.wantOut; got != want {
				t.Errorf("written: got %q, want %q", got, want)
			}
			if got := w.Failed(); got != tt.wantLost {
				t.Errorf("Writer.Failed = %d, want %d", got, tt.wantLost)
			}
			if got := s1.Failed(); got != tt.wantLost1 {
				t.Errorf("first Source's Failed = %d, want %d", got, tt.wantLost1)
			}
			if got := s2.Failed(); got != tt.wantLost2 {
				t.Errorf("second Source's Failed = %d, want %d", got, tt.wantLost2)
			}
		})
	}
}

// A line torn by a failed write is finished by Close when the output takes
// it then, and a Write after Close finishes it before its own line; while
// the output still refuses it, a Write after Close is refused (its caller
// gets the error) rather than appended to the head of the torn line.
func TestCloseAndWriteAfterCloseFinishATornLine(t *testing.T) {
	boom := errors.New("EAGAIN")
	var refuse atomic.Bool
	out := newGatedSink()
	out.fail = func(call int, p []byte) (int, error) {
		switch {
		case call == 2:
			return 2, boom // "bb" of "bbbb\n"
		case call > 2 && refuse.Load():
			return 0, boom
		}
		return len(p), nil
	}
	refuse.Store(true)
	w := New(out, 0)
	_, _ = w.Write([]byte("a\n"))
	<-out.entered
	_, _ = w.Write([]byte("bbbb\n"))
	out.release()
	mustClose(t, w) // its try at "bb\n" is refused: the line is counted
	if got := w.Failed(); got != 1 {
		t.Errorf("Failed = %d, want 1 (the torn line Close could not finish)", got)
	}
	if _, err := w.Write([]byte("late\n")); !errors.Is(err, boom) {
		t.Errorf("Write after Close with the torn line unfinished = %v, want %v", err, boom)
	}
	if got, want := out.String(), "a\nbb"; got != want {
		t.Errorf("written: got %q, want %q", got, want)
	}
	refuse.Store(false)
	if _, err := w.Write([]byte("later\n")); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "a\nbbbb\nlater\n"; got != want {
		t.Errorf("written: got %q, want %q", got, want)
	}
}

// SetOutput writes the lines accepted before it to the old output first
// (keeping the old one if it cannot), and the later ones to the new.
func TestSetOutput(t *testing.T) {
	old, cur := newGatedSink(), &sink{}
	w := New(old, 0)
	_, _ = w.Write([]byte("a\n"))
	<-old.entered // "a" is held in the old output's Write
	_, _ = w.Write([]byte("x\n"))
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.SetOutput(stopped, cur); !errors.Is(err, context.Canceled) {
		t.Fatalf("SetOutput with the old output stuck = %v, want context.Canceled", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.SetOutput(context.Background(), cur) }()
	old.release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("y\n"))
	mustClose(t, w)
	if got := old.String(); got != "a\nx\n" {
		t.Errorf("old output: got %q, want the lines accepted before SetOutput", got)
	}
	if got := cur.String(); got != "y\n" {
		t.Errorf("new output: got %q, want the line after SetOutput", got)
	}
}
