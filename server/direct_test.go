package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// upgradeHead is an events-socket upgrade request for id with extra header
// lines (each ending in \r\n).
func upgradeHead(id, key, extra string) string {
	return "GET /sockets/events/" + id + " HTTP/1.1\r\nHost: x\r\nX-Session-API-Key: " + key + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

// dialEdge opens a raw connection to e with a read deadline.
func dialEdge(t *testing.T, e *edge) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

// handshakeWith serves a direct edge whose chain is auth alone and sends it
// an upgrade for a new conversation; the caller closes e.ts.
func handshakeWith(t *testing.T, auth core.Authenticator) (*edge, net.Conn, *bufio.Reader) {
	t.Helper()
	cfg := config.Default()
	cfg.Limits.PingInterval = 0
	e := buildEdge(t, cfg, auth)
	e.ts = serveDirect(e.srv)
	c, br := dialEdge(t, e)
	if _, err := io.WriteString(c, upgradeHead(e.conversation(t), goodKey, "")); err != nil {
		t.Fatal(err)
	}
	return e, c, br
}

// TestDirectPassesTheRestToNetHTTP sends what the direct path does not
// serve, a second request behind it in the same write, then half-closes,
// and checks that net/http answered exactly what it would have: each
// request once, in order, nothing lost or run twice, on a connection it
// kept alive where it keeps it alive.
func TestDirectPassesTheRestToNetHTTP(t *testing.T) {
	e := newEdge(t, nil)
	id := e.conversation(t)
	const alive = "GET /alive HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := []struct {
		name  string
		first string
		want  []int // the statuses, in order, up to the end of the connection
	}{
		{"REST GET", alive, []int{200, 200}},
		{"POST with a body", "POST /api/conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", []int{401, 200}},
		{"websocket in the path, no upgrade headers", "GET /sockets/events/" + id + "?websocket=1 HTTP/1.1\r\nHost: x\r\n\r\n", []int{400, 200}},
		{"bare LF line ends", "GET /alive HTTP/1.1\nHost: x\n\n", []int{200, 200}},
		// The head ends at its bare-LF empty line, not at the CRLF one of
		// the request behind it, which would otherwise be answered twice.
		{"bare LF line ends, websocket in the query", "GET /alive?websocket HTTP/1.1\nHost: x\n\n", []int{200, 200}},
		{"upgrade without a Host", strings.Replace(upgradeHead(id, goodKey, ""), "Host: x\r\n", "", 1), []int{400}},
		{"upgrade with a bad header name", upgradeHead(id, goodKey, "Bad Name: v\r\n"), []int{400}},
		{"upgrade with an unknown expectation", upgradeHead(id, goodKey, "Expect: wonders\r\n"), []int{417}},
		// net/http upgrades it (the body becomes the socket's first bytes).
		{"upgrade with a body", upgradeHead(id, goodKey, "Content-Length: 3\r\n") + "abc", []int{101}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := dialEdge(t, e)
			if _, err := io.WriteString(c, tt.first+alive); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			var got []int
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("after %v: %v", got, err)
					}
					break
				}
				got = append(got, resp.StatusCode)
				if resp.StatusCode == http.StatusSwitchingProtocols {
					break // a WebSocket from here on
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("statuses %v, want %v", got, tt.want)
			}
		})
	}
}

// TestHeadEnd: a head ends at its first empty line, CRLF or bare LF, as
// net/http's parser reads it, wherever the reads split it.
func TestHeadEnd(t *testing.T) {
	tests := []struct {
		buf  string
		from int
		want int
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest", 0, 27},
		{"GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\r\n\r\n", 0, 24},
		{"GET / HTTP/1.1\nHost: x\n\r\n", 0, 25},
		{"GET / HTTP/1.1\r\nHost: x\r\n", 0, 0},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r", 0, 0},
		// The empty line straddled two reads: readHead resumes two bytes
		// before the end of the last (26 bytes, ending "\r\n\r").
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 24, 27},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 23, 27},
		{"\r\n\r\n", 0, 4},
	}
	for _, tt := range tests {
		if got := headEnd([]byte(tt.buf), tt.from); got != tt.want {
			t.Errorf("headEnd(%q, %d) = %d, want %d", tt.buf, tt.from, got, tt.want)
		}
	}
}

// TestDirectUpgrades checks the upgrades: served whether the head fits the
// direct path's reader or not (net/http serves a larger one).
// TestRefusedUpgradeKeepsTheConnection checks the refusals.
func TestDirectUpgrades(t *testing.T) {
	e := newEdge(t, nil)
	id := e.conversation(t)
	tests := []struct {
		name string
		head string
	}{
		{"direct", upgradeHead(id, goodKey, "")},
		{"head larger than the reader", upgradeHead(id, goodKey, "X-Pad: "+strings.Repeat("p", 2*socketReadBuffer)+"\r\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := dialEdge(t, e)
			if _, err := io.WriteString(c, tt.head); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("response: %v, %v; want a 101", statusOf(resp), err)
			}
			if err := skipFrame(br); err != nil {
				t.Fatalf("full_state after the 101: %v", err)
			}
		})
	}
}

// blockingAuth allows every request once release is closed, and says on
// entered that one is waiting.
type blockingAuth struct {
	entered chan struct{}
	release chan struct{}
}

func (blockingAuth) Name() string { return "blocking" }

func (a blockingAuth) Authenticate(ctx context.Context, req *core.Request) core.Result {
	select {
	case a.entered <- struct{}{}:
	default:
	}
	<-a.release
	return sessionKeyAuth{}.Authenticate(ctx, req)
}

// TestDirectShutdownFinishesHandshakes: a handshake still authenticating
// when the server shuts down is finished, then its socket closed with 1001
// like every other; one that outlasts the shutdown's deadline is cut.
func TestDirectShutdownFinishesHandshakes(t *testing.T) {
	tests := []struct {
		name     string
		release  bool          // the authenticator answers during the shutdown
		within   time.Duration // the shutdown's deadline
		wantCode uint16
	}{
		{"finished then closed with 1001", true, 10 * time.Second, 1001},
		{"cut at the deadline", false, 500 * time.Millisecond, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := blockingAuth{entered: make(chan struct{}, 1), release: make(chan struct{})}
			e, c, br := handshakeWith(t, auth)
			defer e.ts.Close()
			<-auth.entered
			// The client reads what comes, and hangs up at a close frame.
			got := make(chan uint16, 1)
			go func() {
				defer c.Close()
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
					got <- 0
					return
				}
				got <- readCloseCode(br)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), tt.within)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- e.srv.Shutdown(ctx) }()
			var once sync.Once
			defer once.Do(func() { close(auth.release) })
			if tt.release {
				once.Do(func() { close(auth.release) })
			}
			err := <-shut
			switch {
			case tt.release && err != nil:
				t.Fatalf("shutdown: %v", err)
			case !tt.release && (err == nil || !strings.Contains(err.Error(), "drain handshakes: closed 1 still in flight")):
				t.Fatalf("shutdown: %v, want the handshake in flight named", err)
			}
			if code := <-got; code != tt.wantCode {
				t.Fatalf("close code %d, want %d (0: no upgrade)", code, tt.wantCode)
			}
		})
	}
}

// heldKey is the key whose authentication holdingAuth holds.
const heldKey = "held-key-Tq42Lm"

// holdingAuth holds the authentication of heldKey, whatever the request's
// context, until release is closed, as an authenticator stuck on a slow
// service would, and says on entered that it holds one; released, it
// abstains (or allows, with allow). It abstains on every other key.
type holdingAuth struct {
	entered chan struct{}
	release chan struct{}
	allow   bool // allow, rather than abstain, once released
}

func (holdingAuth) Name() string { return "holding" }

func (a holdingAuth) Authenticate(_ context.Context, req *core.Request) core.Result {
	if req.Header.Get("X-Session-API-Key") != heldKey {
		return core.Abstained()
	}
	select {
	case a.entered <- struct{}{}:
	default:
	}
	<-a.release
	if a.allow {
		return core.Allowed(&core.Principal{Subject: "held"})
	}
	return core.Abstained()
}

// holdHandshake serves a direct edge whose chain holds heldKey's
// authentication (then checks session keys), with one socket open on a
// new conversation and one handshake held in its authentication. It
// returns the edge, the open socket and the held handshake's connection;
// the held authentication is released when the test ends.
func holdHandshake(t *testing.T) (*edge, *websocket.Conn, *bufio.Reader) {
	t.Helper()
	cfg := config.Default()
	cfg.Limits.PingInterval = 0
	auth := holdingAuth{entered: make(chan struct{}, 1), release: make(chan struct{})}
	e := buildEdge(t, cfg, auth, sessionKeyAuth{})
	e.ts = serveDirect(e.srv)
	t.Cleanup(e.ts.Close)
	t.Cleanup(func() { close(auth.release) })
	id := e.conversation(t)
	open := e.dialReady(t, id, "")
	c, br := dialEdge(t, e)
	if _, err := io.WriteString(c, upgradeHead(id, heldKey, "")); err != nil {
		t.Fatal(err)
	}
	<-auth.entered
	return e, open, br
}

// TestShutdownLeavesTheActorsTheirShare: a handshake whose authentication
// outlasts the shutdown's deadline takes at most half of it; then it is
// cut, and the actors' shutdown has the rest: the open socket is closed
// with 1001, and the shutdown's one error is the drain's, naming the
// handshake it cut. Before, the drain took the whole deadline and the
// actors' shutdown failed at once, out of time.
func TestShutdownLeavesTheActorsTheirShare(t *testing.T) {
	e, open, held := holdHandshake(t)
	closed := make(chan int, 1)
	go func() {
		_ = open.SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			if _, _, err := open.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					closed <- ce.Code
				} else {
					closed <- 0
				}
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	err := e.srv.Shutdown(ctx)
	const want = "drain handshakes: closed 1 still in flight after "
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown: %v; want the drain's error alone (%q...), the actors' shutdown in time", err, want)
	}
	if got := <-closed; got != core.CloseGoingAway {
		t.Errorf("open socket closed with %d, want %d (0: no close frame)", got, core.CloseGoingAway)
	}
	if resp, err := http.ReadResponse(held, nil); err == nil {
		t.Errorf("held handshake answered %s after it was cut", resp.Status)
	}
}

// TestShutdownRunsOnce: a second Shutdown (Serve's own, when its context
// ends after the caller's) does not run the shutdown again, which would
// find nothing left to fail on and hide the first's error: it returns the
// first's error.
func TestShutdownRunsOnce(t *testing.T) {
	e, _, _ := holdHandshake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	first := e.srv.Shutdown(ctx)
	if first == nil || !strings.Contains(first.Error(), "drain handshakes") {
		t.Fatalf("first shutdown: %v, want the drain's error", first)
	}
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"with time left", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Second)
		}},
		{"out of time", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			if got := e.srv.Shutdown(ctx); got != first {
				t.Errorf("second shutdown: %v, want the first's error: %v", got, first)
			}
		})
	}
}

// readRawFrame reads one unmasked server frame.
func readRawFrame(br *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	if n >= 126 {
		ext := make([]byte, map[uint64]int{126: 2, 127: 8}[n])
		if _, err := io.ReadFull(br, ext); err != nil {
			return 0, nil, err
		}
		n = 0
		for _, b := range ext {
			n = n<<8 | uint64(b)
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// readCloseCode skips frames up to a close frame and returns its code; 0
// when the connection ends first.
func readCloseCode(br *bufio.Reader) uint16 {
	for {
		op, payload, err := readRawFrame(br)
		if err != nil {
			return 0
		}
		if op == 0x8 {
			if len(payload) < 2 {
				return 0
			}
			return uint16(payload[0])<<8 | uint16(payload[1])
		}
	}
}

// TestDirectHandlerPanic: a handler's panic on the direct path closes that
// connection and leaves the server serving.
func TestDirectHandlerPanic(t *testing.T) {
	e := buildEdge(t, config.Default(), sessionKeyAuth{})
	inner := e.srv.handler
	e.srv.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "panic") {
			panic("boom")
		}
		inner.ServeHTTP(w, r)
	})
	e.ts = serveDirect(e.srv)
	defer e.ts.Close()
	id := e.conversation(t)
	var conns []net.Conn
	for i, path := range []string{"panic", id} {
		c, br := dialEdge(t, e)
		conns = append(conns, c)
		if _, err := io.WriteString(c, upgradeHead(path, goodKey, "")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		switch i {
		case 0:
			if err == nil {
				t.Fatalf("the panicking handler's connection answered %d", resp.StatusCode)
			}
		default:
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("after a panic: %v, %v", resp, err)
			}
		}
	}
	if !strings.Contains(e.logs.String(), "panic serving a websocket handshake") {
		t.Error("the panic was not logged")
	}
	for _, c := range conns {
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
}

// ctxAuth reports on entered when a request arrives and on ended what
// ended its context; it decides nothing before that.
type ctxAuth struct {
	entered chan struct{}
	ended   chan error
}

func (ctxAuth) Name() string { return "ctx" }

func (a ctxAuth) Authenticate(ctx context.Context, _ *core.Request) core.Result {
	a.entered <- struct{}{}
	<-ctx.Done()
	a.ended <- ctx.Err()
	return core.Failed(ctx.Err())
}

// TestDirectClientGoneEndsAuthentication: a client that hangs up while its
// handshake authenticates ends the authentication (its queue place and
// plugin slot come back), as net/http's read-ahead did; one that sends a
// frame while it waits keeps it, and the frame is read by the socket.
func TestDirectClientGoneEndsAuthentication(t *testing.T) {
	auth := ctxAuth{entered: make(chan struct{}, 1), ended: make(chan error, 1)}
	e, c, _ := handshakeWith(t, auth)
	defer e.ts.Close()
	<-auth.entered
	c.Close()
	select {
	case err := <-auth.ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the authentication's context ended with %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the authentication went on after its client hung up")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
}

// TestDirectWatchKeepsAByteItReads: a byte the watch read while the
// handshake authenticated is the socket's first: a ping sent before the
// 101 is answered.
func TestDirectWatchKeepsAByteItReads(t *testing.T) {
	auth := blockingAuth{entered: make(chan struct{}, 1), release: make(chan struct{})}
	e, c, br := handshakeWith(t, auth)
	defer e.ts.Close()
	<-auth.entered
	time.Sleep(2 * watchAfter) // the watch is reading
	mask := []byte{1, 2, 3, 4}
	ping := append([]byte{0x80 | opPing, 0x80 | 2}, mask...)
	ping = append(ping, 'h'^mask[0], 'i'^mask[1])
	if _, err := c.Write(ping[:1]); err != nil { // one byte for the watch
		t.Fatal(err)
	}
	time.Sleep(2 * watchAfter)
	if _, err := c.Write(ping[1:]); err != nil {
		t.Fatal(err)
	}
	close(auth.release)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v\n%s", resp, err, e.logs.String())
	}
	for {
		op, payload, err := readRawFrame(br)
		if err != nil {
			t.Fatalf("no pong: %v (the watch's byte was lost)", err)
		}
		if op == opPong {
			if string(payload) != "hi" {
				t.Fatalf("pong %q, want %q", payload, "hi")
			}
			break
		}
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
}

// TestServeAfterShutdownClosesItsListener: Serve on a server already shut
// down refuses, and its listener, which the direct path starts accepting
// on at once, is closed rather than left accepting.
func TestServeAfterShutdownClosesItsListener(t *testing.T) {
	e := buildEdge(t, config.Default(), sessionKeyAuth{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Serve(ctx, ln); err == nil || !strings.Contains(err.Error(), "shut down") {
		t.Fatalf("Serve after Shutdown: %v, want the server said shut down", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after Serve refused")
	}
}

// TestShutdownClosesIdleConnections: a connection whose first request
// head has not all arrived when the server shuts down is closed at once,
// without an answer, as net/http closes its idle ones: one on which
// nothing has arrived (an HTTP client's spare keep-alive connection,
// dialled for a request another connection took), and one that sent a
// part of its head and stopped. The header timeout here outlasts the
// shutdown's deadline, so a shutdown that waited for either fails.
// A handshake whose head was read is finished
// (TestDirectShutdownFinishesHandshakes).
func TestShutdownClosesIdleConnections(t *testing.T) {
	tests := []struct {
		name string
		sent string // before the shutdown; the rest of the head follows it once the shutdown has begun
	}{
		{"nothing sent", ""},
		{"part of a head sent", "GET /sockets/events/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Limits.PingInterval = 0
			e := buildEdge(t, cfg, sessionKeyAuth{})
			ts := httptest.NewUnstartedServer(e.srv.Handler())
			d := newDirectListener(e.srv, ts.Listener, time.Hour)
			e.srv.mu.Lock()
			e.srv.direct = append(e.srv.direct, d)
			e.srv.mu.Unlock()
			ts.Listener = d
			ts.Start()
			defer ts.Close()
			id := e.conversation(t)
			e.ts = ts
			c, br := dialEdge(t, e)
			want := connIdle
			if tt.sent != "" {
				if _, err := io.WriteString(c, tt.sent); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, func() bool {
				state, ok := inflightState(d, c)
				return ok && state == want
			}, "the server to see the connection")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- e.srv.Shutdown(ctx) }()
			if tt.sent != "" {
				// The rest of the head, once the drain has cut the
				// connection: too late, and the write may fail.
				waitFor(t, func() bool {
					state, ok := inflightState(d, c)
					return !ok || state == connCut // gone, or cut
				}, "the drain to cut the connection")
				_, _ = io.WriteString(c, strings.TrimPrefix(upgradeHead(id, goodKey, ""), tt.sent))
			}
			if err := <-shut; err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if resp, err := http.ReadResponse(br, nil); err == nil {
				t.Fatalf("answered %d, want the connection closed without an answer", resp.StatusCode)
			}
		})
	}
}

// rawResponse is one response as it went over the wire: its status, its
// header as sent (Date aside) and the body its framing delimits.
type rawResponse struct {
	status int
	header http.Header
	body   string
}

// readResponses reads the responses c sends until it closes, framing each
// body by the rules a client reads it by (RFC 9112 §6.3): none on 1xx, 204
// and 304, else Content-Length, which the server must send. Bytes that do
// not parse as a response are an error.
func readResponses(c net.Conn) ([]rawResponse, error) {
	raw, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	var got []rawResponse
	for {
		line, err := tp.ReadLine()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		var r rawResponse
		proto, rest, _ := strings.Cut(line, " ")
		code, _, _ := strings.Cut(rest, " ")
		if r.status, err = strconv.Atoi(code); proto != "HTTP/1.1" || err != nil {
			return got, fmt.Errorf("after %d responses: %q is not a status line", len(got), line)
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return got, fmt.Errorf("header of %d: %w", r.status, err)
		}
		r.header = http.Header(h)
		r.header.Del("Date")
		if r.status >= 200 && r.status != http.StatusNoContent && r.status != http.StatusNotModified {
			n, err := strconv.Atoi(r.header.Get("Content-Length"))
			if err != nil {
				return got, fmt.Errorf("%d without a Content-Length: %v", r.status, r.header)
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(tp.R, body); err != nil {
				return got, fmt.Errorf("body of %d: %w", r.status, err)
			}
			r.body = string(body)
		}
		got = append(got, r)
	}
}

// TestDirectResponsesWithoutBody: a handler's response on the direct path
// is framed as net/http frames it: 1xx (but 101) is an interim response
// before the final one, and 1xx, 204 and 304 carry no body and no
// Content-Length or Transfer-Encoding (304 no Content-Type either); a
// handler's Write on them fails with http.ErrBodyNotAllowed.
func TestDirectResponsesWithoutBody(t *testing.T) {
	tests := []struct {
		status int
		want   []int // the statuses sent, interim ones first
	}{
		{http.StatusContinue, []int{100, 200}},
		{http.StatusSwitchingProtocols, []int{101}},
		{http.StatusEarlyHints, []int{103, 200}},
		{http.StatusOK, []int{200}},
		{http.StatusNoContent, []int{204}},
		{http.StatusNotModified, []int{304}},
		{http.StatusUnauthorized, []int{401}},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			var writeErrs [2]error
			handler := func(i int) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/plain; charset=utf-8")
					w.Header().Set("X-Test", "1")
					w.WriteHeader(tt.status)
					_, writeErrs[i] = w.Write([]byte("body"))
				})
			}
			e := buildEdge(t, config.Default(), sessionKeyAuth{})
			e.srv.handler = handler(0)
			direct := serveDirect(e.srv)
			defer direct.Close()
			viaNetHTTP := httptest.NewServer(handler(1))
			defer viaNetHTTP.Close()
			var got [2][]rawResponse
			for i, url := range []string{direct.URL, viaNetHTTP.URL} {
				c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				// Connection: close, for both to end the connection after it.
				if _, err := io.WriteString(c, strings.Replace(upgradeHead("x", goodKey, ""), "Connection: Upgrade", "Connection: Upgrade, close", 1)); err != nil {
					t.Fatal(err)
				}
				if got[i], err = readResponses(c); err != nil {
					t.Fatalf("path %d: %v (read %v)", i, err, got[i])
				}
			}
			var statuses []int
			for _, r := range got[0] {
				statuses = append(statuses, r.status)
				if r.status < 200 || r.status == http.StatusNoContent || r.status == http.StatusNotModified {
					for _, k := range []string{"Content-Length", "Transfer-Encoding"} {
						if v, ok := r.header[k]; ok {
							t.Errorf("%d sent %s: %q", r.status, k, v)
						}
					}
				}
			}
			if !slices.Equal(statuses, tt.want) {
				t.Fatalf("statuses %v, want %v", statuses, tt.want)
			}
			if !reflect.DeepEqual(got[0], got[1]) {
				t.Errorf("direct path sent\n%+v\nnet/http sent\n%+v", got[0], got[1])
			}
			if !errors.Is(writeErrs[0], writeErrs[1]) {
				t.Errorf("Write on the direct path: %v; on net/http: %v", writeErrs[0], writeErrs[1])
			}
		})
	}
}

// inflightState is where d has the server's end of the client connection
// c; ok is false when d no longer tracks it.
func inflightState(d *directListener, c net.Conn) (state inflightConn, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for sc, state := range d.inflight {
		if sc.RemoteAddr().String() == c.LocalAddr().String() {
			return state, true
		}
	}
	return 0, false
}

// TestRefusedUpgradeEndsTheConnection: an upgrade that is refused, on the
// direct path or through net/http (a head too large for the direct path),
// is answered in full with Connection: close, and nothing the client sent
// after it on that connection is served, not even a request in the same
// write: a proxy that took the forwarded Upgrade for the start of a tunnel
// would otherwise pass that request straight through (WebSocket
// smuggling). A request with an Upgrade header to any other route is
// answered the same way.
func TestRefusedUpgradeEndsTheConnection(t *testing.T) {
	e := newEdge(t, nil)
	id := e.conversation(t)
	pad := "X-Pad: " + strings.Repeat("p", 2*socketReadBuffer) + "\r\n"
	const alive = "GET /alive HTTP/1.1\r\nHost: x\r\n\r\n"
	refusals := []struct {
		name   string
		head   func(extra string) string
		status int
	}{
		{"wrong key", func(x string) string { return upgradeHead(id, "wrong-key", x) }, http.StatusUnauthorized},
		{"broken key", func(x string) string { return upgradeHead(id, brokenKey, x) }, http.StatusServiceUnavailable},
		{"foreign origin", func(x string) string { return upgradeHead(id, goodKey, "Origin: http://elsewhere.example\r\n"+x) }, http.StatusForbidden},
		{"bad id", func(x string) string { return upgradeHead("not-a-uuid", goodKey, x) }, http.StatusBadRequest},
		{"unknown route", func(x string) string {
			return strings.Replace(upgradeHead(id, goodKey, x), "/sockets/events/", "/sockets/nothing/", 1)
		}, http.StatusNotFound},
		{"another route", func(x string) string {
			return strings.Replace(upgradeHead(id, goodKey, x), "/sockets/events/"+id, "/alive", 1)
		}, http.StatusOK},
	}
	for _, rf := range refusals {
		for _, path := range []struct{ name, extra string }{{"direct", ""}, {"net/http", pad}} {
			for _, smuggled := range []bool{false, true} {
				name := rf.name + "/" + path.name
				if smuggled {
					name += "/next request in the same write"
				}
				t.Run(name, func(t *testing.T) {
					c, br := dialEdge(t, e)
					head := rf.head(path.extra)
					if smuggled {
						head += alive
					}
					if _, err := io.WriteString(c, head); err != nil {
						t.Fatal(err)
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("response: %v", err)
					}
					if resp.StatusCode != rf.status {
						t.Fatalf("status %d, want %d", resp.StatusCode, rf.status)
					}
					body, err := io.ReadAll(resp.Body)
					if err != nil {
						t.Fatalf("body: %v", err)
					}
					if int64(len(body)) != resp.ContentLength {
						t.Fatalf("body of %d bytes, Content-Length %d", len(body), resp.ContentLength)
					}
					if !resp.Close {
						t.Fatalf("the answer does not say Connection: close (header %q)", resp.Header.Values("Connection"))
					}
					if !smuggled {
						_, _ = io.WriteString(c, alive) // may fail: the server has closed
					}
					if next, err := http.ReadResponse(br, nil); err == nil {
						t.Fatalf("a request after the refused upgrade was answered %d", next.StatusCode)
					}
				})
			}
		}
	}
}

// TestDirectHeadTimeout: a connection whose head stalls is closed at the
// direct listener's header timeout, as net/http's ReadHeaderTimeout does;
// and a head too large for the direct path's reader goes on to net/http
// still bound by that timeout, not by a second one of net/http's: a client
// that sends more than 4 KiB of head and then trickles the rest is cut
// there, although net/http's own timeout here would let it go on for an
// hour.
func TestDirectHeadTimeout(t *testing.T) {
	pad := "X-Pad: " + strings.Repeat("p", 2*socketReadBuffer) + "\r\n"
	tests := []struct {
		name    string
		head    string // all but its empty line
		trickle bool   // a header line follows, a byte at a time, never ending
		silent  bool   // closed with no answer (net/http answers a head it has begun 400, and may be reset)
	}{
		{"head stalls", "GET /sockets/events/x HTTP/1.1\r\nHost: x\r\n", false, true},
		{"large head trickles", strings.TrimSuffix(upgradeHead("x", goodKey, pad), "\r\n"), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := buildEdge(t, config.Default(), sessionKeyAuth{})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			d := newDirectListener(e.srv, ln, 200*time.Millisecond)
			hs := &http.Server{Handler: e.srv.handler, ReadHeaderTimeout: time.Hour}
			served := make(chan error, 1)
			go func() { served <- hs.Serve(d) }()
			t.Cleanup(func() { hs.Close(); <-served })
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tt.head); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			defer close(done)
			if tt.trickle {
				go func() {
					tick := time.NewTicker(20 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-done:
							return
						case <-tick.C:
							if _, err := c.Write([]byte("x")); err != nil {
								return
							}
						}
					}
				}()
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second)) // 50 timeouts: only a bug waits this long
			got, err := io.ReadAll(c)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the connection was still open (read %q): want it closed at the header timeout", got)
			}
			if tt.silent && (err != nil || len(got) > 0) {
				t.Fatalf("read %q, %v: want EOF and nothing before it", got, err)
			}
		})
	}
}

// TestHeadScanFindsHeadEnd: headScan, fed a head in two pieces split
// anywhere, finds its end where headEnd does.
func TestHeadScanFindsHeadEnd(t *testing.T) {
	for _, buf := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest",
		"GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n\r\n",
		"\r\n\r\n",
	} {
		want := headEnd([]byte(buf), 0) == 0
		for i := range len(buf) + 1 {
			h := headScan{pending: true}
			h.scan([]byte(buf[:i]))
			h.scan([]byte(buf[i:]))
			if h.pending != want {
				t.Errorf("%q split at %d: pending %v, want %v", buf, i, h.pending, want)
			}
		}
	}
}

// deadlineConn is a net.Conn that reads from r and records the read
// deadlines set on it (by SetDeadline too).
type deadlineConn struct {
	net.Conn
	r         io.Reader
	deadlines []time.Time
}

func (c *deadlineConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}

func (c *deadlineConn) SetWriteDeadline(time.Time) error { return nil }

func (c *deadlineConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// TestPassedConnBoundsTheHead: a passed connection whose first head is
// still to read takes no read deadline later than the one the head began
// under, none at all included; once the head's end is read, any.
func TestPassedConnBoundsTheHead(t *testing.T) {
	headBy := time.Now().Add(time.Minute)
	earlier, later := headBy.Add(-time.Second), headBy.Add(time.Hour)
	tests := []struct {
		name        string
		early, rest string // the bytes passed on and those read afterwards
		set, want   time.Time
	}{
		{"none, head pending", "GET / HTTP/1.1\r\nX: ", "y\r\n", time.Time{}, headBy},
		{"later, head pending", "GET / HTTP/1.1\r\nX: ", "y\r\n", later, headBy},
		{"earlier, head pending", "GET / HTTP/1.1\r\nX: ", "y\r\n", earlier, earlier},
		{"none, head read", "GET / HTTP/1.1\r\nX: ", "y\r\n\r\n", time.Time{}, time.Time{}},
		{"later, head read", "GET / HTTP/1.1\r\nX: ", "y\r\n\r\n", later, later},
		{"end split over the hand-over", "GET / HTTP/1.1\r\nX: y\r\n\r", "\n", later, later},
		{"bare LF end", "GET / HTTP/1.1\nX: ", "y\n\n", later, later},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := &deadlineConn{r: strings.NewReader(tt.rest)}
			c := &passedConn{Conn: inner, early: []byte(tt.early), headBy: headBy, headScan: headScan{pending: true}}
			if err := c.SetReadDeadline(later); err != nil {
				t.Fatal(err)
			}
			if got := inner.deadlines[0]; !got.Equal(headBy) {
				t.Fatalf("deadline before the head was read: %v, want %v", got, headBy)
			}
			if _, err := io.ReadAll(c); err != nil {
				t.Fatal(err)
			}
			if err := c.SetDeadline(tt.set); err != nil {
				t.Fatal(err)
			}
			if got := inner.deadlines[1]; !got.Equal(tt.want) {
				t.Fatalf("deadline %v set after reading %q: got %v, want %v", tt.set, tt.early+tt.rest, got, tt.want)
			}
		})
	}
}

// TestServeReturnsNilWhenShutdownClosesItsListener: Shutdown closes the
// direct listener itself, and net/http's Serve, when that comes before
// net/http's own Shutdown, returns the closed listener's error, not
// ErrServerClosed. Serve takes it for the shutdown it is (nil), as it
// takes ErrServerClosed: here the shutdown's first two steps are taken in
// that order by hand.
func TestServeReturnsNilWhenShutdownClosesItsListener(t *testing.T) {
	e := buildEdge(t, config.Default(), sessionKeyAuth{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(context.Background(), ln) }()
	waitFor(t, func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return len(e.srv.servers) == 1 && len(e.srv.direct) == 1
	}, "Serve to start")
	e.srv.mu.Lock()
	e.srv.closing.Store(true)
	d := e.srv.direct[0]
	e.srv.mu.Unlock()
	_ = d.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil: its listener was closed by the shutdown", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestShutdownFinishesRequestsBeforeTheActorsStop: a REST request in
// flight when the shutdown begins is answered, since the actors stop only
// after the requests in flight have finished; one that outlasts the
// drain's half of the time is cut, and the actors still have the other
// half to close the open sockets with 1001. Before, the actors stopped
// alongside: the first request was refused with 503 (or, had it reached
// a stopping actor, waited for the request timeout, past the deadline).
func TestShutdownFinishesRequestsBeforeTheActorsStop(t *testing.T) {
	tests := []struct {
		name     string
		release  bool // the request's authentication ends once the shutdown has begun
		wantCode int  // 0: no answer
		wantErr  string
	}{
		{"answered within the drain", true, http.StatusOK, ""},
		{"outlasting the drain", false, 0, "finish HTTP requests and handshakes: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Limits.PingInterval = 0
			auth := holdingAuth{entered: make(chan struct{}, 1), release: make(chan struct{}), allow: true}
			e := buildEdge(t, cfg, auth, sessionKeyAuth{})
			t.Cleanup(func() {
				select {
				case <-auth.release:
				default:
					close(auth.release)
				}
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			go func() { _ = e.srv.Serve(context.Background(), ln) }()
			id := e.conversation(t)
			var open *websocket.Conn
			waitFor(t, func() bool {
				c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/sockets/events/"+id, http.Header{"X-Session-API-Key": {goodKey}})
				open = c
				return err == nil
			}, "the server to serve")
			t.Cleanup(func() { open.Close() })
			readFrame(t, open) // full_state

			answered := make(chan int, 1)
			go func() {
				req, _ := http.NewRequest("POST", "http://"+addr+"/api/conversations/"+id+"/events", strings.NewReader(`{"role":"user","content":"in flight"}`))
				req.Header.Set("X-Session-API-Key", heldKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
				if err != nil {
					answered <- 0
					return
				}
				resp.Body.Close()
				answered <- resp.StatusCode
			}()
			<-auth.entered

			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- e.srv.Shutdown(ctx) }()
			waitFor(t, func() bool { // the listener is closed: the shutdown has begun
				c, err := net.Dial("tcp", addr)
				if err == nil {
					c.Close()
				}
				return err != nil
			}, "the shutdown to close the listener")
			if tt.release {
				close(auth.release)
			}
			if got := <-answered; got != tt.wantCode {
				t.Errorf("the request in flight got %d, want %d (0: no answer)", got, tt.wantCode)
			}
			err = <-shut
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("shutdown: %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "shut down actors")):
				t.Errorf("shutdown: %v, want the drain's error (%q) alone, the actors' shutdown in time", err, tt.wantErr)
			}
			_ = open.SetReadDeadline(time.Now().Add(10 * time.Second))
			var rerr error
			for rerr == nil { // the event posted, if any, then the close
				_, _, rerr = open.ReadMessage()
			}
			var ce *websocket.CloseError
			if !errors.As(rerr, &ce) || ce.Code != core.CloseGoingAway {
				t.Errorf("the open socket ended with %v, want close %d", rerr, core.CloseGoingAway)
			}
		})
	}
}
