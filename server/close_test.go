package server

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/config"
)

// TestSocketSendsOneCloseFrame: a socket's close frame is the only one it
// sends, and its reason never carries a Go error's text. Before, after the
// server's own close frame and the client's answer, gws "answered" with a
// second close; and the close at limits.idle_timeout was gws's, its reason
// the read error, naming the server's address and port.
func TestSocketSendsOneCloseFrame(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*config.Config)
		key  string
		// answer sends the client's close back after the server's.
		answer     bool
		wantReason string
	}{
		{"the server's close, answered", func(c *config.Config) { c.Auth.RejectWith = config.RejectWithClose }, "nope", true, ""},
		{"idle timeout", func(c *config.Config) { c.Limits.IdleTimeout = 300 * time.Millisecond }, goodKey, false, "idle timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEdge(t, tt.cfg)
			c, br := dialEdge(t, e)
			if _, err := io.WriteString(c, upgradeHead(e.conversation(t), tt.key, "")); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			var payload []byte
			for { // past full_state, to the close frame
				op, p, err := readRawFrame(br)
				if err != nil {
					t.Fatalf("no close frame: %v", err)
				}
				if op == opClose {
					payload = []byte(p)
					break
				}
			}
			reason := string(payload[2:])
			if tt.wantReason != "" && reason != tt.wantReason {
				t.Errorf("close reason %q, want %q", reason, tt.wantReason)
			}
			if local := c.RemoteAddr().String(); strings.Contains(reason, local) || strings.Contains(reason, "tcp") {
				t.Errorf("close reason %q names an address", reason)
			}
			if tt.answer {
				mask := []byte{1, 2, 3, 4}
				echo := append([]byte{0x80 | opClose, 0x80 | byte(len(payload))}, mask...)
				for i, b := range payload {
					echo = append(echo, b^mask[i%4])
				}
				if _, err := c.Write(echo); err != nil {
					t.Fatal(err)
				}
			}
			if op, p, err := readRawFrame(br); err == nil {
				t.Errorf("after its close frame the server sent another: op %d payload %q", op, p)
			}
		})
	}
}

// serverClose is a server's close frame: code, then reason.
func serverClose(code uint16, reason string) []byte {
	return append([]byte{0x80 | opClose, byte(2 + len(reason)), byte(code >> 8), byte(code)}, reason...)
}

func TestFixedCloseReason(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 8000}, Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 51000}, Err: os.ErrDeadlineExceeded}
	reset := &net.OpError{Op: "read", Net: "tcp", Source: timeout.Source, Addr: timeout.Addr, Err: syscall.ECONNRESET}
	tests := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"a read that its deadline ended", serverClose(1000, timeout.Error()), serverClose(1000, "idle timeout")},
		{"any other failed read", serverClose(1000, reset.Error()), serverClose(1000, "connection lost")},
		{"the client's end of the stream", serverClose(1000, io.EOF.Error()), serverClose(1000, "EOF")},
		{"the echo of a client's close", serverClose(1000, ""), serverClose(1000, "")},
		{"a protocol error of gws's", serverClose(1009, "message too big"), serverClose(1009, "message too big")},
		{"not a close frame", []byte{0x81, 3, 'a', 'b', 'c'}, []byte{0x81, 3, 'a', 'b', 'c'}},
		{"a length that does not match", append(serverClose(1000, timeout.Error()), 'x'), append(serverClose(1000, timeout.Error()), 'x')},
	}
	for _, tt := range tests {
		if got := fixedCloseReason(tt.in); !bytes.Equal(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// heldDeadlineConn records the last read deadline set on it; the first
// SetReadDeadline waits for release once it has entered.
type heldDeadlineConn struct {
	discardConn
	entered, release chan struct{}

	mu    sync.Mutex
	calls int
	last  time.Time
}

func (c *heldDeadlineConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.calls++
	first := c.calls == 1
	c.mu.Unlock()
	if first {
		close(c.entered)
		<-c.release
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = t
	return nil
}

// A keepalive that found the socket open, and sets its deadline as our
// close frame goes out, does not push the close grace back to
// limits.idle_timeout.
func TestCloseGraceOutlastsAKeepalive(t *testing.T) {
	conn := &heldDeadlineConn{entered: make(chan struct{}), release: make(chan struct{})}
	sock := &socket{srv: &Server{}, conn: conn, out: newOutbound(conn, 1<<20, 0)}
	sock.srv.cfg.Limits.IdleTimeout = time.Hour
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		sock.keepalive()
	}()
	<-conn.entered // past its check, setting the idle deadline
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		sock.closeSent()
	}()
	select {
	case <-sent: // it did not wait for the keepalive
	case <-time.After(100 * time.Millisecond): // it waits for the keepalive, as it should
	}
	close(conn.release)
	<-kept
	<-sent
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if left := time.Until(conn.last); left > closeGrace {
		t.Errorf("read deadline %v away after the close was sent, want at most the close grace, %v", left.Round(time.Second), closeGrace)
	}
}
