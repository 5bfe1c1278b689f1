package baseline

import (
	"encoding/binary"
	"net"
	"sync"

	"github.com/lxzan/gws"
)

// conn is one socket and its outbound queue. Frames arrive already framed
// and shared; a flush goroutine, started only when something is pending,
// writes everything pending with one writev, then ends when the queue is
// empty.
type conn struct {
	ws    *gws.Conn
	nc    net.Conn
	room  *room
	limit int

	mu       sync.Mutex
	pending  net.Buffers
	spare    net.Buffers
	bytes    int // pending plus in flight
	flushing bool
	dead     bool
}

// push queues f. Past the limit the connection is dropped.
func (c *conn) push(f []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	if c.bytes > 0 && c.bytes+len(f) > c.limit {
		c.dead = true
		_ = c.nc.Close()
		return
	}
	c.pending = append(c.pending, f)
	c.bytes += len(f)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
}

// flush writes until the queue is empty.
func (c *conn) flush() {
	for {
		c.mu.Lock()
		if c.dead || len(c.pending) == 0 {
			c.flushing = false
			c.mu.Unlock()
			return
		}
		batch := c.pending
		c.pending = c.spare[:0]
		c.spare = nil
		c.mu.Unlock()

		n := 0
		for _, f := range batch {
			n += len(f)
		}
		bufs := batch // WriteTo consumes its receiver
		_, err := bufs.WriteTo(c.nc)
		clear(batch)

		c.mu.Lock()
		c.spare = batch[:0]
		c.bytes -= n
		if err != nil {
			c.dead = true
			c.flushing = false
			c.mu.Unlock()
			_ = c.nc.Close()
			return
		}
		c.mu.Unlock()
	}
}

// kill stops all writing.
func (c *conn) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dead = true
	clear(c.pending)
	c.pending = nil
}

// frame returns payload behind a final, unmasked text frame header, in one
// slice that every connection shares.
func frame(payload []byte) []byte {
	n := len(payload)
	f := make([]byte, 0, n+10)
	f = append(f, 0x81)
	switch {
	case n < 126:
		f = append(f, byte(n))
	case n <= 0xFFFF:
		f = binary.BigEndian.AppendUint16(append(f, 126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 127), uint64(n))
	}
	return append(f, payload...)
}
