package server

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// closeOrderConn is a recordConn that records its Close as a write of
// "<closed>", so that a test sees what went out before it.
type closeOrderConn struct{ *recordConn }

func (c closeOrderConn) Close() error {
	_, _ = c.recordConn.Write([]byte("<closed>"))
	return nil
}

func TestPrefaceGoesOutFirstAndOnce(t *testing.T) {
	const resp = "HTTP/1.1 101 Switching Protocols\r\n\r\n"
	tests := []struct {
		name string
		then func(t *testing.T, p *prefaceConn)
		want []string // the writes, in order
	}{
		{"the first frame carries it", func(t *testing.T, p *prefaceConn) {
			sent, err := p.sendWith(net.Buffers{[]byte("F1"), []byte("F2")}, 4)
			if !sent || err != nil {
				t.Fatalf("sendWith = %v, %v; want true, nil", sent, err)
			}
			if sent, _ := p.sendWith(net.Buffers{[]byte("F3")}, 2); sent {
				t.Error("a second sendWith sent the response again")
			}
		}, []string{resp + "F1F2"}},
		{"a write of gws's carries it", func(t *testing.T, p *prefaceConn) {
			mustWrite(t, p, "ECHO")
			mustWrite(t, p, "PONG")
		}, []string{resp + "ECHO", "PONG"}},
		{"release sends it alone", func(t *testing.T, p *prefaceConn) {
			if err := p.release(); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, p, "AFTER")
			if sent, _ := p.sendWith(net.Buffers{[]byte("F1")}, 2); sent {
				t.Error("sendWith after release sent the response again")
			}
		}, []string{resp, "AFTER"}},
		{"close sends it before closing", func(t *testing.T, p *prefaceConn) {
			_ = p.Close()
		}, []string{resp, "<closed>"}},
		{"the hold's end sends it alone", func(t *testing.T, p *prefaceConn) {
			p.armRelease(time.Millisecond)
			waitWrites(t, p.Conn.(closeOrderConn).recordConn, 1)
		}, []string{resp}},
		{"a frame before the hold's end stops it", func(t *testing.T, p *prefaceConn) {
			p.armRelease(time.Minute)
			if sent, err := p.sendWith(net.Buffers{[]byte("F1")}, 2); !sent || err != nil {
				t.Fatalf("sendWith = %v, %v", sent, err)
			}
			if p.timer != nil {
				t.Error("the hold's timer is still armed after the frame took the response")
			}
		}, []string{resp + "F1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &recordConn{}
			p := &prefaceConn{Conn: closeOrderConn{rc}}
			p.holding.Store(true)
			mustWrite(t, p, resp) // gws's upgrade response: held back
			if n := len(rc.snapshot()); n != 0 {
				t.Fatalf("the response went out on its own (%d writes)", n)
			}
			tt.then(t, p)
			var got []string
			for _, w := range rc.snapshot() {
				got = append(got, string(w))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("writes = %q, want %q", got, tt.want)
			}
		})
	}
}

func mustWrite(t *testing.T, p *prefaceConn, s string) {
	t.Helper()
	if n, err := p.Write([]byte(s)); n != len(s) || err != nil {
		t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}

// Whatever races for the connection (the outbound's first frame, a write
// of gws's, the hold's end), the response is on the wire first, once.
func TestPrefaceOrderUnderRaces(t *testing.T) {
	const resp = "RESP"
	for i := 0; i < 200; i++ {
		rc := &recordConn{}
		p := &prefaceConn{Conn: rc}
		p.holding.Store(true)
		mustWrite(t, p, resp)
		p.armRelease(0)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, _ = p.sendWith(net.Buffers{[]byte("F")}, 1) }()
		go func() { defer wg.Done(); _, _ = p.Write([]byte("G")) }()
		wg.Wait()
		time.Sleep(time.Millisecond) // let a late timer find nothing to send
		all := ""
		for _, w := range rc.snapshot() {
			all += string(w)
		}
		if !strings.HasPrefix(all, resp) || strings.Count(all, resp) != 1 {
			t.Fatalf("round %d: the wire got %q, want the response first and once", i, all)
		}
	}
}

// The upgrade's 101 reaches the client in the same TCP segment as the
// full_state frame: the client's first read returns both.
func TestUpgradeResponseComesWithTheFirstFrame(t *testing.T) {
	c := rawUpgrade(t, nil)
	buf := make([]byte, 64<<10)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(buf[:n])), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("first read: %v, %q", err, buf[:n])
	}
	head := bytes.Index(buf[:n], []byte("\r\n\r\n")) + 4
	frames := decodeFrames(t, buf[head:n])
	if len(frames) != 1 || frames[0].op != opText || !strings.Contains(frames[0].payload, `"full_state"`) {
		t.Fatalf("the first read after the 101 holds %q, want the full_state frame", frames)
	}
}

// A frame the client sends right behind its upgrade request, before the
// 101, is read: net/http has buffered it with the request, and the
// socket's reader starts with those bytes.
func TestFrameSentWithTheUpgradeRequestIsRead(t *testing.T) {
	mask := []byte{1, 2, 3, 4}
	ping := []byte{0x80 | opPing, 0x80 | 2}
	ping = append(ping, mask...)
	ping = append(ping, 'h'^mask[0], 'i'^mask[1])
	c := rawUpgrade(t, ping)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", err, resp)
	}
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			t.Fatalf("no pong for the ping sent with the request: %v", err)
		}
		n := int(hdr[1] & 0x7f)
		switch n {
		case 126:
			var ext [2]byte
			_, _ = io.ReadFull(br, ext[:])
			n = int(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			_, _ = io.ReadFull(br, ext[:])
			n = int(binary.BigEndian.Uint64(ext[:]))
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatal(err)
		}
		if hdr[0]&0x0f == opPong {
			if string(payload) != "hi" {
				t.Fatalf("pong payload %q, want %q", payload, "hi")
			}
			return
		}
	}
}

// rawUpgrade opens a conversation's events socket on a new server by hand,
// with then (client bytes, if any) in the same write as the request, and
// returns the connection with a read deadline set.
func rawUpgrade(t *testing.T, then []byte) net.Conn {
	t.Helper()
	e := newEdge(t, nil)
	id := e.conversation(t)
	c, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET /sockets/events/" + id + " HTTP/1.1\r\nHost: x\r\nX-Session-API-Key: " + goodKey + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write(append([]byte(req), then...)); err != nil { // one write: one segment
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	return c
}

// A frame of gws's past the response (its close frame) goes out under a
// write deadline of its own: the outbound's may have lapsed on a quiet
// socket, and is never cleared.
func TestGwsFramesSetTheirWriteDeadline(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		want    int // deadlines set
	}{
		{"with limits.write_timeout", time.Minute, 1},
		{"without", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := &writeDeadlineConn{}
			p := &prefaceConn{Conn: conn, writeTimeout: tt.timeout}
			start := time.Now()
			mustWrite(t, p, "\x88\x02\x03\xe8") // a close frame, past the response
			got := conn.deadlinesSet()
			if len(got) != tt.want {
				t.Fatalf("%d deadlines set, want %d", len(got), tt.want)
			}
			if tt.want > 0 && got[0].Before(start.Add(tt.timeout)) {
				t.Errorf("deadline %v, want the timeout from the write", got[0])
			}
			if w := conn.snapshot(); len(w) != 1 {
				t.Errorf("%d writes, want the frame", len(w))
			}
		})
	}
}
