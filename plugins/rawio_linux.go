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
	return rawSocket{rc}
}

// Read reads what the socket holds, up to len(p) bytes, waiting until it
// holds something; io.EOF once the other end has closed.
func (s rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = readFD(fd, p)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN // false: wait until readable
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting whenever the socket's buffer is full.
func (s rawSocket) Write(p []byte) (int, error) {
	written, stuck := 0, false
	var errno syscall.Errno
	err := s.rc.Write(func(fd uintptr) bool {
		for written < len(p) {
			var n int
			n, errno = writeFD(fd, p[written:])
			switch {
			case errno == syscall.EINTR:
			case errno == syscall.EAGAIN:
				errno = 0
				return false // wait until writable
			case errno != 0:
				return true
			case n == 0:
				stuck = true // as internal/poll: a write of nothing is an error, not a retry
				return true
			default:
				written += n
			}
		}
		return true
	})
	switch {
	case err != nil:
		return written, err
	case errno != 0:
		return written, os.NewSyscallError("write", errno)
	case stuck:
		return written, io.ErrUnexpectedEOF
	}
	return written, nil
}
