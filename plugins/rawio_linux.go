package plugins

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawSocket reads and writes a channel's socket with raw system calls,
// waiting in the runtime's poller whenever the socket would block.
//
// Why: net.Conn's Read and Write make each read(2) and write(2) through
// syscall.Syscall, which tells the scheduler that the goroutine may block
// (entersyscall): the call then wakes the runtime's monitor thread
// (sysmon) whenever the process had gone idle, and the monitor runs, and
// sleeps 20 µs, and runs again, each time a switch of threads. A plugin
// process goes idle between every batch of calls, so on a busy core every
// batch paid for those switches: most of a plugin process's CPU was its
// scheduler, not its check. A channel's socket is non-blocking, so its
// calls never block and need none of it: RawConn waits in the poller
// instead, as net.Conn does, with its deadlines and its Close. Measured in
// docs/benchmarks.md (the eighth round): an uncached JWT connect cost 110
// µs of CPU with net.Conn on both ends of the channel and 97.5 with this.
// The calls themselves are readFD and writeFD: raw ones, except in a
// build with the race detector or a sanitizer, which must see the
// kernel's reads and writes of p (rawcall_linux.go).
type rawSocket struct {
	rc syscall.RawConn
	// The read's state and the write's, each with its callback for rc
	// made once (newRawSocket): a closure per call cost five allocations
	// per batch of calls. A framer reads from one goroutine and writes
	// from another, so each is used by one call at a time.
	rd, wr rawCall
}

// rawCall is one direction's state: the bytes of the call under way, what
// its system calls did, and the callback that makes them.
type rawCall struct {
	p       []byte
	n       int // bytes read or written
	errno   syscall.Errno
	stuck   bool // a write(2) wrote nothing and said nothing
	perform func(fd uintptr) bool
}

// channelIO returns how a framer reads and writes c: raw system calls
// (rawSocket) for a socket that offers its descriptor, c itself otherwise.
func channelIO(c net.Conn) io.ReadWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return newRawSocket(rc)
}

// newRawSocket returns a rawSocket on rc with its callbacks bound.
func newRawSocket(rc syscall.RawConn) *rawSocket {
	s := &rawSocket{rc: rc}
	s.rd.perform = s.rd.read
	s.wr.perform = s.wr.write
	return s
}

// Read reads what the socket holds, up to len(p) bytes, waiting until it
// holds something; io.EOF once the other end has closed.
func (s *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c := &s.rd
	c.p, c.n, c.errno = p, 0, 0
	err := s.rc.Read(c.perform)
	c.p = nil
	switch {
	case err != nil:
		return 0, err
	case c.errno != 0:
		return 0, os.NewSyscallError("read", c.errno)
	case c.n == 0:
		return 0, io.EOF
	}
	return c.n, nil
}

// read makes one read(2) into c.p, again when a signal interrupted it; it
// reports false, to wait until the socket is readable, when it would block.
func (c *rawCall) read(fd uintptr) bool {
	for {
		c.n, c.errno = readFD(fd, c.p)
		if c.errno != syscall.EINTR {
			return c.errno != syscall.EAGAIN
		}
	}
}

// Write writes all of p, waiting whenever the socket's buffer is full.
func (s *rawSocket) Write(p []byte) (int, error) {
	c := &s.wr
	c.p, c.n, c.errno, c.stuck = p, 0, 0, false
	err := s.rc.Write(c.perform)
	c.p = nil
	switch {
	case err != nil:
		return c.n, err
	case c.errno != 0:
		return c.n, os.NewSyscallError("write", c.errno)
	case c.stuck:
		return c.n, io.ErrUnexpectedEOF
	}
	return c.n, nil
}

// write writes what is left of c.p with write(2) until it is all written
// or the call fails; it reports false, to wait until the socket is
// writable, when the socket's buffer is full.
func (c *rawCall) write(fd uintptr) bool {
	for c.n < len(c.p) {
		n, errno := writeFD(fd, c.p[c.n:])
		switch {
		case errno == syscall.EINTR:
		case errno == syscall.EAGAIN:
			return false
		case errno != 0:
			c.errno = errno
			return true
		case n == 0:
			c.stuck = true // as internal/poll: a write of nothing is an error, not a retry
			return true
		default:
			c.n += n
		}
	}
	return true
}
