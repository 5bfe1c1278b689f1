package server

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The upgrade's response is held back and sent in one write with the
// socket's first frame. Every attached socket's first frame follows its
// upgrade within a moment (full_state, or a close when the attach fails),
// and writing the 101 on its own cost a write syscall, a loopback delivery
// and a wakeup of the client per connect: about 7% of a connect's CPU.
// The response still goes out first, and alone when anything else comes
// first:
//   - the outbound's first write (the first frame, or a close frame)
//     carries it in front, in the same writev;
//   - anything gws writes itself (a close echo, a pong, a refusal) sends it
//     first, in the same write;
//   - a socket that waits for its client's first message, or that no frame
//     reaches within prefaceHold, sends it alone; so does closing the
//     connection.
//
// A client sees no difference but one TCP segment fewer: the 101 precedes
// every frame, as it must.

// prefaceHold is the longest the upgrade's response waits for the first
// frame. An attach takes well under a millisecond on a quiet node and can
// take much longer on a loaded one, or while a cluster hands a
// conversation to a new owner; a second is far below any client's
// handshake timeout (the OpenHands clients wait 10 s).
const prefaceHold = time.Second

// prefaceConn is the connection gws writes through: it holds back the
// first thing written (the upgrade's response) until it can go out with
// the next write, or alone at release.
type prefaceConn struct {
	net.Conn // the hijacked connection

	// holding is true from the upgrade until the response is sent (or
	// dropped with the connection); after that a write passes straight
	// through. mu orders the response before everything else.
	holding atomic.Bool
	muted   atomic.Bool // the server's close frame is queued: gws's writes are dropped
	// writeTimeout bounds each frame gws writes past the response
	// (limits.write_timeout; 0: none).
	writeTimeout time.Duration
	mu           sync.Mutex
	captured     bool   // the response was written into held
	held         []byte // the response, until sent
	timer        *time.Timer
}

// Write holds back the first write and sends it in front of the next.
// Once the server's own close frame is queued (mute), what gws writes is
// dropped: after the 101, gws writes only close frames (its echo of the
// client's close, or one for a read error), and a socket sends one close
// frame.
func (p *prefaceConn) Write(b []byte) (int, error) {
	if p.muted.Load() {
		return len(b), nil
	}
	if !p.holding.Load() {
		return p.writeFrame(b)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.captured {
		p.captured = true
		p.held = append([]byte(nil), b...)
		return len(b), nil
	}
	if p.held == nil {
		return p.writeFrame(b)
	}
	f := fixedCloseReason(b)
	if err := p.sendLocked(net.Buffers{f}, len(f)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// writeFrame writes a frame of gws's past the response: a close frame,
// its reason fixed (fixedCloseReason), under a write deadline of its own,
// since the outbound's may have lapsed on a quiet socket
// (outbound.renewDeadline). It reports b written whole.
func (p *prefaceConn) writeFrame(b []byte) (int, error) {
	f := fixedCloseReason(b)
	if p.writeTimeout > 0 {
		if err := p.Conn.SetWriteDeadline(time.Now().Add(p.writeTimeout)); err != nil {
			return 0, err
		}
	}
	if _, err := p.Conn.Write(f); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close sends a held response before closing: a refused upgrade's answer,
// or a 101 that no frame followed.
func (p *prefaceConn) Close() error {
	_ = p.release() // the close reports what matters
	return p.Conn.Close()
}

// armRelease sends the held response alone if no frame has taken it
// within d.
func (p *prefaceConn) armRelease(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held != nil {
		p.timer = time.AfterFunc(d, p.releaseAfterHold)
	}
}

// releaseAfterHold is the timer's release: a connection whose response
// cannot be written is closed, which ends its read loop.
func (p *prefaceConn) releaseAfterHold() {
	if err := p.release(); err != nil {
		_ = p.Conn.Close()
	}
}

// release sends the held response alone, if it is still held.
func (p *prefaceConn) release() error {
	if !p.holding.Load() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.holding.Store(false)
		return nil
	}
	return p.sendLocked(nil, 0)
}

// sendWith writes the held response followed by bufs (n bytes) in one
// write and reports whether it did; false means nothing was held and the
// caller writes bufs itself.
func (p *prefaceConn) sendWith(bufs net.Buffers, n int) (bool, error) {
	if !p.holding.Load() {
		return false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.holding.Store(false)
		return false, nil
	}
	return true, p.sendLocked(bufs, n)
}

// sendLocked writes held then bufs (n bytes) in one call (writeOnce), and
// stops holding once that write is done: a writer that saw holding waits
// on mu, so nothing overtakes the response. The caller holds mu.
func (p *prefaceConn) sendLocked(bufs net.Buffers, n int) error {
	held := p.held
	p.held = nil
	defer p.holding.Store(false)
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	all := make(net.Buffers, 0, 1+len(bufs))
	return writeOnce(p.Conn, append(append(all, held), bufs...), len(held)+n)
}

// socketReadBuffer is a socket's read buffer: gws's default ReadBufferSize.
const socketReadBuffer = 4 << 10

// hijack takes the connection over from net/http for gws: the connection
// to write through, which holds back the upgrade's response and bounds
// gws's later frames by writeTimeout, and a reader straight on the
// connection, so that the socket's reads, idle for most of its life, go
// through no wrapper. (One more frame in the read path of a
// parked read loop took its stack from 2 to 4 KiB: 2 KiB more per idle
// connection.) Bytes a client sent behind its upgrade request, which
// net/http has read already, are read first. The reader is a new one:
// handing gws net/http's own, reset onto the connection, saved that
// allocation but cost 2.7 KiB more per idle connection in the idle
// benchmark (14.6 against 11.9 KiB, the same binary otherwise): a reader
// that has read the request has its buffer's pages resident, while a new
// one, which an idle socket never reads into, has none (see headReaders).
func hijack(w http.ResponseWriter, writeTimeout time.Duration) (*prefaceConn, *bufio.Reader, error) {
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("hijack: %w", err)
	}
	var br *bufio.Reader
	if dc, ok := c.(*directConn); ok { // a direct upgrade: its socket's reader is made already
		c, br = dc.Conn, dc.br
	} else {
		var early []byte
		if n := rw.Reader.Buffered(); n > 0 {
			early, _ = rw.Reader.Peek(n)
		}
		br = socketReader(c, early)
	}
	pc := &prefaceConn{Conn: c, writeTimeout: writeTimeout}
	pc.holding.Store(true)
	return pc, br, nil
}

// socketReader returns a socket's reader on c, early (bytes the client sent
// behind its upgrade request, read already; copied) first.
func socketReader(c net.Conn, early []byte) *bufio.Reader {
	var src io.Reader = c
	if len(early) > 0 {
		src = io.MultiReader(bytes.NewReader(bytes.Clone(early)), c)
	}
	return bufio.NewReaderSize(src, socketReadBuffer)
}

// Close reasons for a socket whose read failed (fixedCloseReason).
const (
	// idleReason: its deadline ended the read; the client sent nothing,
	// not even a pong, for limits.idle_timeout (or, after the server's
	// close frame, for the close grace).
	idleReason = "idle timeout"
	// lostReason: any other failed read.
	lostReason = "connection lost"
)

// fixedCloseReason returns gws's close frame b with a fixed reason when it
// closes for a failed read, and b itself otherwise. gws closes a socket
// whose read failed with code 1000 and the error's text as the reason, and
// net's errors name both ends' addresses (behind a load balancer, the
// server's internal address and port); its other close frames carry
// another code, or no reason (the echo of a client's close). The reason
// becomes idleReason for a read that its deadline ended, and lostReason
// for any other but io.EOF, which stays.
//
// This is done here, on the one close frame, rather than by wrapping the
// socket's reader to replace the errors: every idle socket's read loop
// parks in that reader, and its frame made the read loops' stacks 4 KiB
// instead of 2 (about 2 KiB more per idle connection, `agent-bench -scenario
// idle`).
func fixedCloseReason(b []byte) []byte {
	const closeOp, normal = 0x80 | opClose, 1000
	if len(b) <= 4 || b[0] != closeOp || int(b[1]) != len(b)-2 || binary.BigEndian.Uint16(b[2:4]) != normal {
		return b
	}
	reason := string(b[4:])
	fixed := lostReason
	switch {
	case reason == io.EOF.Error():
		return b
	case strings.HasSuffix(reason, os.ErrDeadlineExceeded.Error()):
		fixed = idleReason
	}
	out := append(make([]byte, 0, 4+len(fixed)), b[:4]...)
	out[1] = byte(2 + len(fixed))
	return append(out, fixed...)
}

var _ net.Conn = (*prefaceConn)(nil)
