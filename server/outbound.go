package server

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-server/agent-server/core"
)

// WebSocket opcodes the server writes itself.
const (
	opText  byte = 0x1
	opClose byte = 0x8
	opPing  byte = 0x9
	opPong  byte = 0xA
)

// maxCloseReason is the longest close reason a close frame can carry: a
// control frame's payload is at most 125 bytes, two of them the code.
const maxCloseReason = 123

// outbound is one socket's bounded send queue.
//
// Frames are queued already framed: an unmasked server header in a small
// arena, then the payload itself, shared with every other subscriber and
// never copied. A payload that reaches a second socket (an event fanning
// out) is framed once instead, header and payload in one shared slice (see
// sharedFrame), so that every further socket queues a single iovec for it.
// A flush goroutine, started only when there is something to
// write and ending when the queue is empty, takes everything queued and
// writes it with one writev (net.Buffers) on the TCP connection, under
// limits.write_timeout. A single writev on a *net.TCPConn holds the socket's
// write lock for the whole call, so the few frames gws writes itself (its
// close-handshake replies) can never land inside one of ours.
//
// The bound counts queued and in-flight bytes. A frame that would cross it
// while anything is pending is refused: what is queued is dropped and the
// socket closes with 4008 "slow consumer". A frame larger than the bound is
// still accepted on an empty queue.
type outbound struct {
	conn         net.Conn
	limit        int
	writeTimeout time.Duration
	// deadline is the write deadline set on conn, renewed by a write that
	// finds less than three quarters of writeTimeout left and never
	// cleared (renewDeadline). Only the flush goroutine uses it.
	deadline    time.Time
	perFrame    bool        // write one frame per syscall; only for the comparison benchmark
	closeSent   func()      // called once the close frame is written
	closeQueued func()      // called, under mu, when the close frame is queued; nil for none
	failed      func(error) // called once on a write error
	// depth sees, once per write, the most bytes the queue held during
	// it: what was written plus what queued meanwhile, the figure the
	// bound is checked against, at its peak. wrote sees each batch
	// written (frames, bytes). Both are nil when not measured. (Observing
	// the depth per frame queued cost 10 ns a frame on the fan-out path,
	// where a write carries many frames.)
	depth prometheus.Observer
	wrote func(frames, n int)
	// preface holds the upgrade's response until the first write carries
	// it (preface.go); nil once that write is done. Only the flush
	// goroutine uses it.
	preface *prefaceConn

	mu       sync.Mutex
	cur      *batch // frames waiting for the next flush
	spare    *batch // a recycled batch
	inflight int    // bytes being written now
	overflow int    // bytes the queue would have held with a frame it refused (4008), for depth
	flushing bool
	closing  bool   // a close frame is queued: no more frames
	dead     bool   // the connection failed or was closed
	sent     uint16 // the code of the close frame queued, 0 if none
	// pong is the payload of the pong owed to the client's latest ping,
	// framed only when the next batch is taken: a client that sends pings
	// faster than it reads is owed one pong, not one per ping (RFC 6455
	// 5.5.3 allows answering only the latest), so its pings cannot grow the
	// queue past limit.
	pong    []byte
	pongDue bool
}

// batch is a run of frames written together.
type batch struct {
	bufs   net.Buffers // header, payload, header, payload, ...
	ends   []int       // where each frame ends in bufs
	hdrs   []byte      // arena the headers point into
	bytes  int
	frames int
	close  bool // the last frame is a close frame
}

func (b *batch) reset() {
	clear(b.bufs) // drop the references to shared payloads
	b.bufs, b.ends, b.hdrs, b.bytes, b.frames, b.close = b.bufs[:0], b.ends[:0], b.hdrs[:0], 0, 0, false
}

// add frames payload: as one shared framed slice when sharedFrame has one,
// else behind a header in the arena. A grown arena leaves the earlier
// headers in the old array, which stays valid.
func (b *batch) add(op byte, payload []byte) {
	if f := sharedFrame(op, payload); f != nil {
		b.bufs = append(b.bufs, f)
		b.ends = append(b.ends, len(b.bufs))
		b.bytes += len(f)
		b.frames++
		return
	}
	start := len(b.hdrs)
	b.hdrs = appendFrameHeader(b.hdrs, op, len(payload))
	hdr := b.hdrs[start:len(b.hdrs):len(b.hdrs)]
	b.bufs = append(b.bufs, hdr)
	if len(payload) > 0 {
		b.bufs = append(b.bufs, payload)
	}
	b.ends = append(b.ends, len(b.bufs))
	b.bytes += len(hdr) + len(payload)
	b.frames++
}

// appendFrameHeader appends a final, unmasked frame header for n bytes.
func appendFrameHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(dst, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
	}
}

// Bounds of the payloads sharedFrame handles: it hashes bytes 8 to 11 (in
// an event, inside its random id), and it keeps a copy of each recent one.
const (
	minShared = 12
	maxShared = 16 << 10
)

// sharedFrames is a small direct-mapped cache of recently queued payloads,
// by identity (the address of the first byte and the length), each with
// its framed copy once it has one.
var sharedFrames [64]atomic.Pointer[sharedEntry]

// sharedEntry is one cache slot's payload. data keeps the payload alive, so
// its address cannot be reused for another one while the entry exists.
type sharedEntry struct {
	data   *byte
	n      int
	op     byte
	framed []byte // header and payload; nil until the payload's second send
}

// sharedFrame returns payload framed in one slice shared by every socket,
// or nil. The first time a payload is queued it is only remembered (a frame
// for one client, like full_state or a replayed event, is never copied); the
// second time, it is copied once behind its header and the copy is returned
// from then on. Two iovecs per frame, header and payload, cost writev more
// than one: in agent-bench's back-to-back fan-out (1,000 subscribers,
// 256-byte messages) server CPU per delivered event went from 0.80 to
// 0.63 µs with this cache (medians of 5 paired runs; every pair improved).
// It relies on what Transport.Send promises anyway: a frame never changes
// once queued.
func sharedFrame(op byte, payload []byte) []byte {
	n := len(payload)
	if n < minShared || n > maxShared {
		return nil
	}
	h := uint32(payload[8]) | uint32(payload[9])<<8 | uint32(payload[10])<<16 | uint32(payload[11])<<24
	slot := &sharedFrames[((h^uint32(n))*0x9E3779B1)>>26]
	p := &payload[0]
	e := slot.Load()
	if e == nil || e.data != p || e.n != n || e.op != op {
		slot.Store(&sharedEntry{data: p, n: n, op: op})
		return nil
	}
	if e.framed != nil {
		return e.framed
	}
	f := appendFrameHeader(make([]byte, 0, maxFrameHeader+n), op, n)
	f = append(f, payload...)
	slot.CompareAndSwap(e, &sharedEntry{data: p, n: n, op: op, framed: f})
	return f
}

// maxFrameHeader is the longest header appendFrameHeader writes.
const maxFrameHeader = 10

func newOutbound(conn net.Conn, limit int, writeTimeout time.Duration) *outbound {
	return &outbound{conn: conn, limit: limit, writeTimeout: writeTimeout, cur: &batch{}, spare: &batch{}}
}

// send queues a text frame. It never blocks.
func (o *outbound) send(payload []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || o.dead {
		return false
	}
	pending := o.cur.bytes + o.inflight
	if pending > 0 && pending+len(payload)+10 > o.limit {
		o.overflow = max(o.overflow, pending+len(payload))
		o.cur.reset()
		o.queueClose(core.DisconnectSlowConsumer)
		return false
	}
	o.cur.add(opText, payload)
	o.kick()
	return true
}

// ping queues a ping; the server's pinger sends one at a time.
func (o *outbound) ping() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || o.dead {
		return false
	}
	o.cur.add(opPing, nil)
	o.kick()
	return true
}

// pongTo owes the client a pong to its ping with payload, in place of any
// pong owed still: at most one is ever queued.
func (o *outbound) pongTo(payload []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || o.dead {
		return false
	}
	o.pong, o.pongDue = payload, true
	o.kick()
	return true
}

// takePong frames the pong owed, if any, into the batch being filled.
// Callers hold mu.
func (o *outbound) takePong() {
	if o.pongDue {
		o.cur.add(opPong, o.pong)
		o.pong, o.pongDue = nil, false
	}
}

// close queues a close frame behind what is queued. The first close wins.
func (o *outbound) close(d core.Disconnect) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || o.dead {
		return
	}
	o.queueClose(d)
}

func (o *outbound) queueClose(d core.Disconnect) {
	reason := d.Reason
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
	}
	payload := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), d.Code)
	o.takePong() // before the close frame: nothing follows it
	o.cur.add(opClose, append(payload, reason...))
	o.cur.close = true
	o.closing = true
	o.sent = d.Code
	if o.closeQueued != nil {
		o.closeQueued()
	}
	o.kick()
}

// sentCode returns the code of the close frame queued, 0 if none.
func (o *outbound) sentCode() uint16 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sent
}

// backlog returns the queued and in-flight bytes, and the bound.
func (o *outbound) backlog() (queued, limit int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cur.bytes + o.inflight, o.limit
}

// isClosing reports whether a close frame is queued or the socket is dead.
func (o *outbound) isClosing() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closing || o.dead
}

// kill marks the queue dead: nothing more is written.
func (o *outbound) kill() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dead = true
	o.cur.reset()
	o.pong, o.pongDue = nil, false
}

// kick starts the flush goroutine unless it runs. Callers hold mu.
func (o *outbound) kick() {
	if !o.flushing && (o.cur.frames > 0 || o.pongDue) {
		o.flushing = true
		go o.flush()
	}
}

// flush writes batches until the queue is empty, then ends.
func (o *outbound) flush() {
	for {
		o.mu.Lock()
		if !o.dead {
			o.takePong()
		}
		if o.dead || o.cur.frames == 0 {
			o.flushing = false
			o.mu.Unlock()
			return
		}
		b := o.cur
		o.cur, o.spare = o.spare, nil
		if o.cur == nil {
			o.cur = &batch{}
		}
		o.inflight = b.bytes
		o.mu.Unlock()

		err := o.write(b)
		if err == nil && o.wrote != nil {
			o.wrote(b.frames, b.bytes)
		}

		o.mu.Lock()
		peak := max(o.inflight+o.cur.bytes, o.overflow) // a refused frame's overflow is the peak that closed the socket
		o.inflight, o.overflow = 0, 0
		closed := b.close
		b.reset()
		o.spare = b
		if err != nil {
			o.dead = true
			o.cur.reset()
		}
		o.mu.Unlock()
		if err == nil && o.depth != nil {
			o.depth.Observe(float64(peak))
		}
		switch {
		case err != nil:
			o.failed(err)
			return
		case closed:
			o.mu.Lock()
			o.flushing = false
			o.mu.Unlock()
			o.closeSent()
			return
		}
	}
}

// write puts b on the wire: one writev, or one per frame when perFrame is
// set for the comparison benchmark.
func (o *outbound) write(b *batch) error {
	if err := o.renewDeadline(); err != nil {
		return err
	}
	if p := o.preface; p != nil {
		o.preface = nil
		if sent, err := p.sendWith(b.bufs, b.bytes); sent {
			return err
		}
	}
	if o.perFrame {
		start := 0
		for _, end := range b.ends {
			one := b.bufs[start:end:end]
			if _, err := one.WriteTo(o.conn); err != nil {
				return err
			}
			start = end
		}
		return nil
	}
	return writeOnce(o.conn, b.bufs, b.bytes)
}

// renewDeadline sets the write deadline writeTimeout ahead when less than
// three quarters of it is left: a write may take between three quarters of
// limits.write_timeout and all of it. Setting it before every write and
// clearing it after took two of the runtime's timer updates per write,
// 4% of the server's CPU in the storm's paced fan-out (docs/benchmarks.md,
// the eighth round); renewed, a socket written to often sets it once per
// quarter timeout. The deadline stays set between writes and lapses on an
// idle socket, which matters only to a write: the next one renews it, and
// gws's frames set their own (prefaceConn.writeFrame).
func (o *outbound) renewDeadline() error {
	if o.writeTimeout <= 0 {
		return nil
	}
	now := time.Now()
	if o.deadline.Sub(now) >= o.writeTimeout-o.writeTimeout/4 {
		return nil
	}
	o.deadline = now.Add(o.writeTimeout)
	return o.conn.SetWriteDeadline(o.deadline)
}

// writeOnce writes bufs (n bytes in all) to c in one call: one writev on a
// TCP or Unix connection, and otherwise one Write of a copy, since
// net.Buffers would write piece by piece and another writer could slip in
// between.
func writeOnce(c net.Conn, bufs net.Buffers, n int) error {
	if hasWritev(c) {
		_, err := bufs.WriteTo(c) // consumes only this copy of the slice header
		return err
	}
	flat := make([]byte, 0, n)
	for _, p := range bufs {
		flat = append(flat, p...)
	}
	_, err := c.Write(flat)
	return err
}

// hasWritev reports whether net.Buffers.WriteTo on c is a single writev.
func hasWritev(c net.Conn) bool {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}
