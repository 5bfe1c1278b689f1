package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
)

// recordConn is a net.Conn that records each Write; release gates them.
type recordConn struct {
	discardConn
	mu      sync.Mutex
	writes  [][]byte
	release chan struct{} // nil: writes go through at once
	entered chan struct{} // signalled as each gated write starts
}

// gatedConn returns a recordConn whose writes wait for release.
func gatedConn() *recordConn {
	return &recordConn{release: make(chan struct{}), entered: make(chan struct{}, 100)}
}

func (c *recordConn) Write(p []byte) (int, error) {
	if c.release != nil {
		c.entered <- struct{}{}
		<-c.release
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *recordConn) snapshot() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...)
}

// discardConn is a net.Conn that accepts everything.
type discardConn struct{}

func (discardConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) Close() error                     { return nil }
func (discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (discardConn) SetDeadline(time.Time) error      { return nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }

// wireFrame is one decoded server frame.
type wireFrame struct {
	op      byte
	payload string
}

// decodeFrames parses unmasked final frames.
func decodeFrames(t *testing.T, b []byte) []wireFrame {
	t.Helper()
	var out []wireFrame
	for len(b) > 0 {
		if b[0]&0x80 == 0 || len(b) < 2 || b[1]&0x80 != 0 {
			t.Fatalf("bad frame header % x", b[:min(len(b), 2)])
		}
		op, n, h := b[0]&0x0f, int(b[1]), 2
		switch n {
		case 126:
			n, h = int(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			n, h = int(binary.BigEndian.Uint64(b[2:])), 10
		}
		out = append(out, wireFrame{op, string(b[h : h+n])})
		b = b[h+n:]
	}
	return out
}

func waitWrites(t *testing.T, c *recordConn, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if w := c.snapshot(); len(w) >= n {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d writes, want %d", len(c.snapshot()), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFrameHeaderLengths(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 20} {
		payload := strings.Repeat("a", n)
		var b batch
		b.add(opText, []byte(payload))
		var wire []byte
		for _, p := range b.bufs {
			wire = append(wire, p...)
		}
		got := decodeFrames(t, wire)
		if len(got) != 1 || got[0].op != opText || got[0].payload != payload {
			t.Errorf("length %d: decoded %d frames", n, len(got))
		}
	}
}

// TestPendingFramesGoOutInOneWrite holds the first write, queues more, and
// checks they all leave in the next single write, close frame last.
func TestPendingFramesGoOutInOneWrite(t *testing.T) {
	conn := gatedConn()
	o := newOutbound(conn, 1<<20, time.Second)
	closed := make(chan struct{})
	o.closeSent = func() { close(closed) }
	o.failed = func(err error) { t.Errorf("write failed: %v", err) }

	o.send([]byte("first"))
	<-conn.entered // the flush goroutine is now blocked writing "first"
	for _, m := range []string{"a", "b", "c"} {
		if !o.send([]byte(m)) {
			t.Fatalf("send %q refused", m)
		}
	}
	o.ping()
	o.close(core.DisconnectShutdown)
	if o.send([]byte("late")) {
		t.Error("send after close accepted")
	}
	close(conn.release)
	<-closed
	writes := waitWrites(t, conn, 2)
	if len(writes) != 2 {
		t.Fatalf("got %d writes, want 2", len(writes))
	}
	got := decodeFrames(t, writes[1])
	want := []wireFrame{{opText, "a"}, {opText, "b"}, {opText, "c"}, {opPing, ""}, {opClose, "\x03\xe9Server shutting down"}}
	if len(got) != len(want) {
		t.Fatalf("second write has %d frames, want %d: %q", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("frame %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// TestPingFloodOwesOnePong: a client that sends pings faster than it
// reads is owed one pong, to its latest ping, however many it sent: its
// pings cannot grow the queue. A pong owed when the socket closes goes
// out before the close frame. Before, each ping queued a pong of its own
// past send_queue_bytes, with no 4008: one socket's ping flood grew the
// server's heap by hundreds of megabytes.
func TestPingFloodOwesOnePong(t *testing.T) {
	tests := []struct {
		name  string
		close bool // the socket is closed while the pong is owed
		want  []wireFrame
	}{
		{"the latest ping's pong", false, []wireFrame{{opPong, "ping 99999"}}},
		{"before the close frame", true, []wireFrame{{opPong, "ping 99999"}, {opClose, "\x03\xe9Server shutting down"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := gatedConn()
			o := newOutbound(conn, 1<<10, time.Second)
			closed := make(chan struct{})
			o.closeSent = func() { close(closed) }
			o.failed = func(err error) { t.Errorf("write failed: %v", err) }
			o.send([]byte("first"))
			<-conn.entered // the flush goroutine is now blocked writing "first"
			for i := range 100000 {
				if !o.pongTo([]byte(fmt.Sprintf("ping %d", i))) {
					t.Fatalf("pong %d refused", i)
				}
			}
			if queued, limit := o.backlog(); queued > limit {
				t.Fatalf("pings queued %d bytes, over the bound %d", queued, limit)
			}
			if tt.close {
				o.close(core.DisconnectShutdown)
			}
			close(conn.release)
			if tt.close {
				<-closed
			}
			writes := waitWrites(t, conn, 2)
			got := decodeFrames(t, writes[1])
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("second write = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSlowConsumerDropsQueueAndCloses(t *testing.T) {
	conn := gatedConn()
	o := newOutbound(conn, 100, time.Second)
	closed := make(chan struct{})
	o.closeSent = func() { close(closed) }
	o.failed = func(err error) { t.Errorf("write failed: %v", err) }

	if !o.send([]byte(strings.Repeat("x", 300))) {
		t.Fatal("a frame larger than the bound was refused on an empty queue")
	}
	<-conn.entered
	if o.send([]byte("over")) {
		t.Fatal("send over the bound accepted")
	}
	if o.send([]byte("after")) {
		t.Fatal("send after the slow-consumer close accepted")
	}
	close(conn.release)
	<-closed
	writes := waitWrites(t, conn, 2)
	got := decodeFrames(t, writes[len(writes)-1])
	if len(got) != 1 || got[0].op != opClose || got[0].payload != "\x0f\xa8slow consumer" {
		t.Errorf("last write = %q, want only the 4008 close frame", got)
	}
}

func TestPerFrameModeWritesEachFrame(t *testing.T) {
	conn := gatedConn()
	o := newOutbound(conn, 1<<20, time.Second)
	o.perFrame = true
	closed := make(chan struct{})
	o.closeSent = func() { close(closed) }
	o.failed = func(err error) { t.Errorf("write failed: %v", err) }
	o.send([]byte("first"))
	<-conn.entered
	o.send([]byte("a"))
	o.send([]byte("b"))
	o.close(core.DisconnectShutdown)
	close(conn.release)
	<-closed
	// Without writev each frame is header and payload: two writes a frame.
	if n := len(conn.snapshot()); n != 8 {
		t.Errorf("got %d writes, want 8 (4 frames)", n)
	}
}

// depthObserver records the queue-depth observations.
type depthObserver struct {
	mu   sync.Mutex
	seen []float64
}

func (d *depthObserver) Observe(v float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen = append(d.seen, v)
}

// The queue depth is observed once per write, at its peak: the frames being
// written plus those queued meanwhile, which is what the bound sees.
func TestQueueDepthObservedPerWrite(t *testing.T) {
	conn := gatedConn()
	o := newOutbound(conn, 1<<20, time.Second)
	depth := &depthObserver{}
	o.depth = depth
	o.failed = func(err error) { t.Errorf("write failed: %v", err) }
	closed := make(chan struct{})
	o.closeSent = func() { close(closed) }

	o.send([]byte("first")) // 2 + 5 bytes
	<-conn.entered
	for _, m := range []string{"a", "bb", "ccc"} { // 3 + 4 + 5 bytes, queued during the first write
		o.send([]byte(m))
	}
	close(conn.release)
	waitWrites(t, conn, 2)
	o.close(core.DisconnectShutdown) // a third write, alone: 2 + 2 + len(reason)
	<-closed
	depth.mu.Lock()
	defer depth.mu.Unlock()
	if len(depth.seen) != 3 || depth.seen[0] != 7+12 || depth.seen[1] != 12 {
		t.Errorf("depth observations %v, want 3 writes, the first seeing 19 bytes, the second 12", depth.seen)
	}
}

// A frame that would pass the bound closes the socket with 4008; the write
// under way when it came is observed at the depth the frame would have
// made, the peak that closed it, not at what was left after the queue was
// dropped.
func TestQueueDepthObservesTheOverflow(t *testing.T) {
	conn := gatedConn()
	o := newOutbound(conn, 100, time.Second)
	depth := &depthObserver{}
	o.depth = depth
	o.failed = func(err error) {}
	o.closeSent = func() {}

	o.send([]byte("first")) // 2 + 5 bytes, being written
	<-conn.entered
	if o.send(make([]byte, 120)) { // 7 + 120 > 100: refused, 4008 queued
		t.Fatal("a frame past the bound was queued")
	}
	close(conn.release)
	waitWrites(t, conn, 2)
	depth.mu.Lock()
	defer depth.mu.Unlock()
	if len(depth.seen) == 0 || depth.seen[0] != 7+120 {
		t.Errorf("depth observations %v, want the first at 127 bytes, the overflow", depth.seen)
	}
}

// writeDeadlineConn is a recordConn that also records its write deadlines.
type writeDeadlineConn struct {
	recordConn
	dmu       sync.Mutex
	deadlines []time.Time
}

func (c *writeDeadlineConn) SetWriteDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.deadlines = append(c.deadlines, t)
	return nil
}

func (c *writeDeadlineConn) deadlinesSet() []time.Time {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return append([]time.Time(nil), c.deadlines...)
}

// TestWriteDeadlineRenewed: a write sets the write deadline only when
// less than three quarters of limits.write_timeout is left of it, and
// never clears it; with no timeout, no deadline is set.
func TestWriteDeadlineRenewed(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		pause   time.Duration // between the two writes
		want    int           // deadlines set
	}{
		{"writes close together share one deadline", time.Hour, 0, 1},
		{"a write after the deadline lapsed sets a new one", 20 * time.Millisecond, 50 * time.Millisecond, 2},
		{"no timeout, no deadline", 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := &writeDeadlineConn{}
			o := newOutbound(conn, 1<<20, tt.timeout)
			o.failed = func(err error) { t.Errorf("write failed: %v", err) }
			start := time.Now()
			o.send([]byte("one"))
			waitWrites(t, &conn.recordConn, 1)
			time.Sleep(tt.pause)
			o.send([]byte("two"))
			waitWrites(t, &conn.recordConn, 2)
			got := conn.deadlinesSet()
			if len(got) != tt.want {
				t.Fatalf("%d deadlines set (%v), want %d", len(got), got, tt.want)
			}
			for i, d := range got {
				if d.IsZero() || d.Before(start.Add(tt.timeout)) {
					t.Errorf("deadline %d = %v: cleared, or less than the timeout after the first write", i, d)
				}
			}
		})
	}
}

// TestWriteTimeoutEndsAStalledWrite: a client that stops reading fails
// the socket's write once limits.write_timeout has passed, on a real TCP
// connection, the deadline set by the renewal.
func TestWriteTimeoutEndsAStalledWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close() // never read
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	o := newOutbound(server, 64<<20, 200*time.Millisecond)
	failed := make(chan error, 1)
	o.failed = func(err error) { failed <- err }
	big := bytes.Repeat([]byte("x"), 16<<20) // far past both ends' socket buffers
	o.send(big)
	select {
	case err := <-failed:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("write failed with %v, want a timeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a write to a client that reads nothing never failed")
	}
}
