//go:build unix

package plugins

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A plugin takes its channel only from a descriptor that is what a host
// hands over, a unix stream socket at 3 or above, and then leaves nothing
// behind for a process it starts: the descriptor is closed, and the
// connection's own is close-on-exec. Anything else is no channel, and the
// descriptor is not touched.
func TestInheritedChannel(t *testing.T) {
	open := func(fd int) bool {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		return !errors.Is(err, unix.EBADF)
	}
	dup := func(t *testing.T, fd uintptr) int {
		t.Helper()
		n, err := syscall.Dup(int(fd))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Run("the host's channel", func(t *testing.T) {
		hf, pf, err := newChannel()
		if err != nil {
			t.Fatal(err)
		}
		defer hf.Close()
		defer pf.Close()
		fd := dup(t, pf.Fd())
		conn := inheritedChannel(func(string) string { return strconv.Itoa(fd) })
		if conn == nil {
			t.Fatal("no channel from a socketpair end")
		}
		defer conn.Close()
		if open(fd) {
			syscall.Close(fd)
			t.Errorf("descriptor %d is still open after it was taken", fd)
		}
		raw, err := conn.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var flags int
		raw.Control(func(fd uintptr) { flags, err = unix.FcntlInt(fd, unix.F_GETFD, 0) })
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("the channel's descriptor: flags %#x (%v), want close-on-exec", flags, err)
		}
		if _, err := hf.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := conn.Read(buf); err != nil || string(buf) != "ping" {
			t.Errorf("read %q (%v) from the channel, want what the host wrote", buf, err)
		}
	})

	file, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	dgram, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(dgram[0])
	defer syscall.Close(dgram[1])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tcp, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	closed := dup(t, file.Fd())
	syscall.Close(closed)
	for _, tc := range []struct {
		name, value string
		fd          int // a descriptor that must stay open; -1 for none
	}{
		{"unset", "", -1},
		{"not a number", "x", -1},
		{"negative", "-1", -1},
		{"standard input", "0", 0},
		{"standard error", "2", 2},
		{"a file", strconv.Itoa(int(file.Fd())), int(file.Fd())},
		{"a datagram socket", strconv.Itoa(dgram[0]), dgram[0]},
		{"a TCP socket", strconv.Itoa(int(tcp.Fd())), int(tcp.Fd())},
		{"a closed descriptor", strconv.Itoa(closed), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if conn := inheritedChannel(func(string) string { return tc.value }); conn != nil {
				conn.Close()
				t.Fatalf("%s=%q: got a channel, want none", channelEnv, tc.value)
			}
			if tc.fd >= 0 && !open(tc.fd) {
				t.Errorf("descriptor %d was closed", tc.fd)
			}
		})
	}
}
