package plugins

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// A channel's socket is read and written with raw system calls; anything
// without a descriptor is used as it is.
func TestChannelIO(t *testing.T) {
	a, _ := socketPair(t)
	if _, ok := channelIO(a).(*rawSocket); !ok {
		t.Errorf("channelIO(%T) = %T, want *rawSocket", a, channelIO(a))
	}
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if got := channelIO(p); got != p {
		t.Errorf("channelIO(net.Pipe) = %T, want the pipe itself", got)
	}
}

// rawSocket keeps every promise of the net.Conn it replaces: bytes in
// order, a write larger than the socket's buffer whole, io.EOF when the
// other end closes, net.ErrClosed once closed, both deadlines, and an
// error (no signal) writing to a closed peer.
func TestRawSocket(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, a, b net.Conn)
	}{
		{"bytes in order", func(t *testing.T, a, b net.Conn) {
			if n, err := channelIO(a).Write([]byte("hello")); n != 5 || err != nil {
				t.Fatalf("write: %d, %v", n, err)
			}
			buf := make([]byte, 16)
			n, err := io.ReadAtLeast(channelIO(b), buf, 5)
			if err != nil || string(buf[:n]) != "hello" {
				t.Fatalf("read %q, %v", buf[:n], err)
			}
		}},
		{"a write larger than the socket's buffer", func(t *testing.T, a, b net.Conn) {
			want := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(io.LimitReader(channelIO(b), int64(len(want))))
				got <- b
			}()
			if n, err := channelIO(a).Write(want); n != len(want) || err != nil {
				t.Fatalf("write: %d of %d, %v", n, len(want), err)
			}
			if !bytes.Equal(<-got, want) {
				t.Fatal("the reader got other bytes")
			}
		}},
		{"EOF when the other end closes", func(t *testing.T, a, b net.Conn) {
			b.Close()
			if n, err := channelIO(a).Read(make([]byte, 8)); n != 0 || err != io.EOF {
				t.Fatalf("read: %d, %v; want io.EOF", n, err)
			}
		}},
		{"closed", func(t *testing.T, a, b net.Conn) {
			rw := channelIO(a)
			a.Close()
			if _, err := rw.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read: %v; want net.ErrClosed", err)
			}
			if _, err := rw.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("write: %v; want net.ErrClosed", err)
			}
		}},
		{"closed while waiting", func(t *testing.T, a, b net.Conn) {
			done := make(chan error, 1)
			go func() {
				_, err := channelIO(a).Read(make([]byte, 8))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			a.Close()
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read: %v; want net.ErrClosed", err)
			}
		}},
		{"the read deadline", func(t *testing.T, a, b net.Conn) {
			_ = a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := channelIO(a).Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read: %v; want the deadline", err)
			}
		}},
		{"the write deadline", func(t *testing.T, a, b net.Conn) {
			_ = a.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
			n, err := channelIO(a).Write(make([]byte, 64<<20)) // b reads nothing
			if !errors.Is(err, os.ErrDeadlineExceeded) || n >= 64<<20 {
				t.Fatalf("write: %d bytes, %v; want the deadline, part written", n, err)
			}
		}},
		{"writing to a closed peer", func(t *testing.T, a, b net.Conn) {
			b.Close()
			var err error
			for i := 0; i < 100 && err == nil; i++ {
				_, err = channelIO(a).Write(make([]byte, 64<<10))
			}
			if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("write: %v; want EPIPE or ECONNRESET", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := socketPair(t)
			tt.run(t, a, b)
		})
	}
}

// A read and a write on the channel allocate nothing: they run once per
// batch of calls, on both ends. (task test runs this without -race too.)
func TestRawSocketAllocatesNothing(t *testing.T) {
	if checkedCalls {
		t.Skip("the race detector's and the sanitizers' system calls allocate; the raw ones are measured without them")
	}
	a, b := socketPair(t)
	w, r := channelIO(a), channelIO(b)
	msg, buf := []byte("a batch"), make([]byte, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per write and read, want none", allocs)
	}
}
