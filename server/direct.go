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
	"os"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Direct upgrades: WebSocket handshakes on plain connections are served
// straight off the listener, not through net/http's connection machinery.
//
// net/http, per connection, allocates a 4 KiB reader and a 4 KiB writer
// that a hijack throws away, starts a goroutine that reads ahead to notice a
// client leaving (a read that finds nothing, a park, and a wake-up when the
// hijack aborts it), moves the connection's deadlines three times and
// tracks the connection in a map. A connection that becomes a WebSocket has
// no use for any of it. directListener reads each new connection's first
// request head into a pooled reader, and when the head asks for a
// WebSocket it runs the server's handler (the same middleware, routes and
// handshake as through net/http) on a pooled goroutine, with a response
// writer that hands over the connection and a reader of the socket's own.
// Every other connection, and any head that does not fit the reader, goes
// to net/http with exactly the bytes already read in front, so REST is
// served exactly as before. A refused upgrade ends its connection, as
// through net/http (closeUnswitched). TLS listeners keep net/http
// throughout: the handlers read the client certificate from net/http's
// request.
//
// net/http's read-ahead also noticed a client that hung up while its
// handshake was authenticating, and ended the authentication. Here a
// handshake that runs longer than watchAfter has its connection read for
// that (directWriter.watch); shorter ones never pay for it.

// directListener is the net.Listener net/http serves on a plain listener:
// its step (serve) keeps the upgrades and passes the rest on.
type directListener struct {
	*handoffListener
	s             *Server
	headerTimeout time.Duration // to read a connection's first request head

	mu       sync.Mutex                // closing the listener happens under it too
	inflight map[net.Conn]inflightConn // connections between accept and hand-over
	idle     sync.WaitGroup            // counts inflight
}

// inflightConn is where an accepted connection stands before its hand-over.
type inflightConn int

const (
	// connIdle: its first request head has not all arrived: nothing
	// yet (a client's spare keep-alive connection, dialled for a request
	// that another connection then took), or a part. Shutting down closes
	// it.
	connIdle inflightConn = iota
	// connStarted: its first request head has been read: shutting down
	// waits for its answer.
	connStarted
	// connCut: shutting down closed it while it was idle.
	connCut
)

// listenDirect wraps ln for direct upgrades and registers it, for Shutdown
// to wait for its handshakes.
func (s *Server) listenDirect(ln net.Listener) net.Listener {
	d := newDirectListener(s, ln, readHeaderTimeout)
	s.mu.Lock()
	s.direct = append(s.direct, d)
	s.mu.Unlock()
	return d
}

// newDirectListener starts accepting from ln. Each connection's step runs
// on one of the actors' pooled goroutines: the handshake is deep enough to
// grow a new goroutine's stack by copying it, twice or more.
func newDirectListener(s *Server, ln net.Listener, headerTimeout time.Duration) *directListener {
	d := &directListener{s: s, headerTimeout: headerTimeout, inflight: make(map[net.Conn]inflightConn)}
	d.handoffListener = newHandoffListener(ln, s.log, s.actors.Go, d.serve)
	d.start()
	return d
}

// Close stops accepting. Connections already accepted finish their
// handshake; Server.Shutdown waits for them (drain).
func (d *directListener) Close() error {
	d.mu.Lock() // after this, track adds nothing: drain sees every handshake
	defer d.mu.Unlock()
	return d.handoffListener.Close()
}

// track records c as in flight, unless the listener is closed.
func (d *directListener) track(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.closed:
		return false
	default:
	}
	d.inflight[c] = connIdle
	d.idle.Add(1)
	return true
}

// begin records that c's first request head has been read, unless
// shutting down closed c first; it reports whether c is still served.
func (d *directListener) begin(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inflight[c] == connCut {
		return false
	}
	d.inflight[c] = connStarted
	return true
}

// untrack forgets c.
func (d *directListener) untrack(c net.Conn) {
	d.mu.Lock()
	delete(d.inflight, c)
	d.mu.Unlock()
	d.idle.Done()
}

// drain closes the connections whose first request head has not all
// arrived (nothing, or a part of it), as net/http's Shutdown closes its
// idle ones and drops a request it reads after it began; it waits for the
// others to be upgraded, answered or passed on, and closes those left
// when ctx ends. A connection still reading its head would otherwise hold
// the shutdown for up to the header timeout, as long as
// server.shutdown_timeout by default, whether a client's spare keep-alive
// connection or one that sent a byte and stopped. Server.Shutdown gives the drain
// at most half of its time (drainBudget): a slow handshake still in flight
// then (a head arriving in pieces, an authentication under way) is cut,
// and the error says how many were. The listener is closed first.
func (d *directListener) drain(ctx context.Context) error {
	start := time.Now()
	d.mu.Lock()
	for c, state := range d.inflight {
		if state == connIdle {
			d.inflight[c] = connCut
			_ = c.Close()
		}
	}
	d.mu.Unlock()
	finished := make(chan struct{})
	go func() { d.idle.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	d.mu.Lock()
	n := 0
	for c, state := range d.inflight {
		if state != connCut { // not closed idle above, and not yet gone
			n++
		}
		_ = c.Close()
	}
	d.mu.Unlock()
	return fmt.Errorf("drain handshakes: closed %d still in flight after %s: %w", n, time.Since(start).Round(time.Millisecond), ctx.Err())
}

// serve reads c's first request head and either serves its upgrade or
// passes c to net/http.
func (d *directListener) serve(c net.Conn) {
	if !d.track(c) { // accepted as the listener closed
		_ = c.Close()
		return
	}
	defer d.untrack(c)
	var w *directWriter
	defer func() {
		// As net/http does: a handler's panic ends its connection only, and
		// a connection it has hijacked is no longer its to close.
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				d.s.log.Error("panic serving a websocket handshake", "remote", c.RemoteAddr().String(), "panic", v, "stack", string(debug.Stack()))
			}
			if w == nil || !w.hijacked {
				_ = c.Close()
			}
		}
	}()
	headBy := time.Now().Add(d.headerTimeout)
	_ = c.SetReadDeadline(headBy)
	br := headReaders.Get().(*bufio.Reader)
	br.Reset(c)
	defer func() { br.Reset(nil); headReaders.Put(br) }()
	head, err := readHead(br)
	if err != nil || !d.begin(c) { // nothing to answer: gone, stalled, or cut by drain
		_ = c.Close()
		return
	}
	// Everything read so far: the head and whatever followed it. Parsing
	// the head never refills br (the head is all in it), so this stays
	// valid, and a connection passed on gets exactly these bytes.
	read, _ := br.Peek(br.Buffered())
	if head == nil { // too large for the fast path: net/http reads the rest, by the same deadline
		d.passOn(c, read, headBy)
		return
	}
	if !mayUpgrade(head) {
		d.passOn(c, read, time.Time{})
		return
	}
	req, err := http.ReadRequest(br)
	if err != nil || !directUpgrade(req) {
		d.passOn(c, read, time.Time{}) // net/http answers it, malformed or not, as it always has
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	req.RemoteAddr = c.RemoteAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w = &directWriter{conn: c, br: br, gone: cancel}
	w.watchTimer = time.AfterFunc(watchAfter, w.watch)
	defer w.stopWatching()
	d.s.handler.ServeHTTP(w, req.WithContext(ctx))
	if w.hijacked {
		return
	}
	// Refused: the direct path serves only upgrades, and an upgrade that
	// is not switched ends its connection (closeUnswitched).
	w.finish()
	_ = c.Close()
}

// watchAfter is how long a direct handshake runs before its connection is
// watched for the client hanging up, which ends the request's context and
// with it an authentication still queued or running. net/http watches from
// the start, at the cost of a goroutine and a read per connection; nearly
// every handshake ends well within this.
const watchAfter = 50 * time.Millisecond

// Watch states of a directWriter.
const (
	watchArmed   = iota // the timer is set
	watchReading        // watch is reading the connection
	watchStopped        // no more watching: the handler is done or hijacked
)

// headReaders holds the readers that first request heads are read into. A
// socket gets a reader of its own at the upgrade (socketReader): one that
// has read nothing yet, whose buffer an idle socket never touches, so that
// its pages are not made resident. Reading heads into the socket's own
// reader cost 1.8 KiB of RSS per idle socket in the idle benchmark.
var headReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, socketReadBuffer) }}

// passOn hands c to net/http with read, the bytes read from it (copied:
// they are in a pooled buffer), in front. A zero headBy says that read
// holds a whole request head, or none; otherwise net/http reads the rest
// of the head by headBy (see passedConn).
func (d *directListener) passOn(c net.Conn, read []byte, headBy time.Time) {
	_ = c.SetReadDeadline(headBy)
	d.pass(&passedConn{Conn: c, early: bytes.Clone(read), headBy: headBy, headScan: headScan{pending: !headBy.IsZero()}})
}

// readHead returns the bytes of br's first request head, through its
// first empty line, without consuming them. It returns nil and no error
// when the head does not fit br's buffer, and an error when the connection
// fails first.
func readHead(br *bufio.Reader) ([]byte, error) {
	from := 0
	for n := 1; ; n = br.Buffered() + 1 {
		if n > br.Size() {
			return nil, nil
		}
		if _, err := br.Peek(n); err != nil {
			return nil, err
		}
		buf, _ := br.Peek(br.Buffered())
		if end := headEnd(buf, from); end > 0 {
			return buf[:end], nil
		}
		from = max(len(buf)-2, 0) // an empty line may straddle two reads
	}
}

// headEnd is the length of buf's first head, through its first empty line
// (CRLF or a bare LF, as net/http's parser reads it), or 0 when that is not
// all in buf. The search starts at from: buf[:from] holds no line end that
// could begin the empty line.
func headEnd(buf []byte, from int) int {
	for i := from; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(buf) && buf[i] == '\n':
			return i + 1
		case i+1 < len(buf) && buf[i] == '\r' && buf[i+1] == '\n':
			return i + 2
		}
	}
}

// directUpgrade reports whether req is served directly: a WebSocket upgrade
// with no body that net/http would take as it is (HTTP/1.x, a valid Host,
// valid header fields, no Expect: the checks of net/http's server).
// Anything else goes to net/http, which answers it as it always has.
func directUpgrade(req *http.Request) bool {
	if req.Method != http.MethodGet || req.ProtoMajor != 1 || req.ContentLength > 0 || len(req.TransferEncoding) > 0 || !isUpgrade(req) {
		return false
	}
	if req.Header.Get("Expect") != "" { // net/http answers 417 or 100 Continue
		return false
	}
	if req.URL.IsAbs() || (req.ProtoMinor >= 1 && req.Host == "") || !httpguts.ValidHostHeader(req.Host) {
		return false
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// mayUpgrade reports whether a request head could be a WebSocket upgrade:
// a GET that names websocket somewhere. The parsed request decides.
func mayUpgrade(head []byte) bool {
	if !bytes.HasPrefix(head, []byte("GET ")) {
		return false
	}
	const word = "websocket"
	for i := 0; i+len(word) <= len(head); i++ {
		if head[i]|0x20 == 'w' && bytes.EqualFold(head[i:i+len(word)], []byte(word)) {
			return true
		}
	}
	return false
}

// passedConn is a connection net/http serves, with the bytes read from it
// before the hand-over read first.
//
// A first request head that net/http is to read the rest of stays bound by
// the header timeout it started under here (headBy): until the head's empty
// line has been read, a read deadline set later than headBy, or none, is
// headBy. net/http sets its ReadHeaderTimeout afresh on every connection it
// is given, and would otherwise let a slow client hold one for twice the
// timeout.
type passedConn struct {
	net.Conn
	early []byte

	headBy   time.Time
	headScan // pending until the head's end is read; by net/http's goroutine alone
}

// Read returns the early bytes first, then reads the connection.
func (c *passedConn) Read(p []byte) (n int, err error) {
	if len(c.early) > 0 {
		n = copy(p, c.early)
		c.early = c.early[n:]
	} else {
		n, err = c.Conn.Read(p)
	}
	if c.pending {
		c.scan(p[:n])
	}
	return n, err
}

// SetReadDeadline sets the read deadline, no later than headBy while the
// first head is being read.
func (c *passedConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.bound(t))
}

// SetDeadline sets the deadlines, the read one as SetReadDeadline does.
func (c *passedConn) SetDeadline(t time.Time) error {
	if !c.pending {
		return c.Conn.SetDeadline(t)
	}
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(c.bound(t))
}

// bound is t, or headBy when the first head is pending and t is later.
func (c *passedConn) bound(t time.Time) time.Time {
	if c.pending && (t.IsZero() || t.After(c.headBy)) {
		return c.headBy
	}
	return t
}

// headScan follows the bytes of a request head, read in pieces, to its end:
// its first empty line, CRLF or bare LF, as headEnd finds it.
type headScan struct {
	pending bool // the end is not read yet
	state   byte // what the bytes so far end with: 0, "\n" or "\n\r"
}

// scan reads on through p; pending turns false at the head's end.
func (h *headScan) scan(p []byte) {
	for _, b := range p {
		switch {
		case b == '\n' && h.state != 0:
			h.pending = false
			return
		case b == '\n':
			h.state = '\n'
		case b == '\r' && h.state == '\n':
			h.state = '\r'
		default:
			h.state = 0
		}
	}
}

// CloseWrite half-closes a TCP connection, as net/http does before it
// closes one it has answered.
func (c *passedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// directConn is what a direct upgrade's Hijack returns: the connection and
// the socket's reader, for gws to read on.
type directConn struct {
	net.Conn
	br *bufio.Reader
}

// directWriter is the response writer of a direct upgrade. A handler that
// does not hijack gets its response written when it returns (finish).
type directWriter struct {
	conn     net.Conn
	br       *bufio.Reader
	header   http.Header
	status   int
	body     []byte
	hijacked bool

	gone       context.CancelFunc // ends the request's context
	watchTimer *time.Timer
	watchMu    sync.Mutex
	watchState int
	watchDone  chan struct{} // closed when watch returns, once it reads
	first      [1]byte       // a byte watch read: the socket's first
	firstRead  bool
}

// watch reads the connection, on the timer's goroutine, until the client
// sends something (kept for the socket), hangs up (the request's context
// ends) or stopWatching aborts the read. A client that sent bytes behind
// its request head is there: it is not watched.
func (w *directWriter) watch() {
	w.watchMu.Lock()
	if w.watchState != watchArmed || w.br.Buffered() > 0 {
		w.watchMu.Unlock()
		return
	}
	w.watchState = watchReading
	w.watchDone = make(chan struct{})
	w.watchMu.Unlock()
	defer close(w.watchDone)
	n, err := w.conn.Read(w.first[:])
	switch {
	case n == 1:
		w.firstRead = true
	case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
		w.gone()
	}
}

// stopWatching ends the watch: disarms it, or aborts its read and waits for
// it, so that nothing reads the connection after it returns.
func (w *directWriter) stopWatching() {
	w.watchMu.Lock()
	state := w.watchState
	w.watchState = watchStopped
	w.watchMu.Unlock()
	switch state {
	case watchArmed:
		w.watchTimer.Stop() // if it fires anyway, watch finds watchStopped
	case watchReading:
		_ = w.conn.SetReadDeadline(time.Unix(1, 0))
		<-w.watchDone
		_ = w.conn.SetReadDeadline(time.Time{})
	}
}

// Header returns the response header.
func (w *directWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

// WriteHeader records the status; the response goes out when the handler
// returns. An informational status (1xx but 101) is no response's final
// one: it goes out at once, as net/http sends it, and the handler's final
// status follows.
func (w *directWriter) WriteHeader(code int) {
	if w.status != 0 || w.hijacked {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		_ = w.writeResponse(&http.Response{StatusCode: code, ProtoMajor: 1, ProtoMinor: 1, Header: w.Header()})
		return
	}
	w.status = code
}

// Write buffers body bytes. A status that allows no body (RFC 9110 §15.3.5,
// §15.4.5: 1xx, 204, 304) refuses them with http.ErrBodyNotAllowed, as
// net/http does.
func (w *directWriter) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// bodyAllowed reports whether a response with status may have a body, and
// with it the Content-Length or Transfer-Encoding that frames one.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// Hijack hands the connection over with a reader of its own (see
// directConn), the bytes read behind the request head in front.
func (w *directWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	w.stopWatching()
	var early []byte // read from the connection but not by the handler: behind the head, and a byte watch read
	if w.firstRead {
		early = append(early, w.first[0])
	}
	if n := w.br.Buffered(); n > 0 {
		read, _ := w.br.Peek(n)
		early = append(early, read...)
	}
	r := socketReader(w.conn, early)
	return &directConn{Conn: w.conn, br: r}, bufio.NewReadWriter(r, bufio.NewWriterSize(w.conn, 64)), nil
}

// finish writes the response of a handler that did not hijack, with
// Connection: close: the direct path serves only upgrades, and one that is
// not switched ends its connection (closeUnswitched says why), as it does
// through net/http.
func (w *directWriter) finish() {
	w.stopWatching()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	h := w.Header()
	switch {
	case bodyAllowed(w.status):
		if h.Get("Content-Type") == "" && len(w.body) > 0 {
			h.Set("Content-Type", http.DetectContentType(w.body))
		}
	case w.status == http.StatusNotModified: // as net/http: no representation metadata
		h.Del("Content-Type")
	}
	if h.Get("Date") == "" {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	// Response.Write frames the body itself: it leaves out the handler's
	// Content-Length and Transfer-Encoding and writes a Content-Length
	// (even 0) only where a body is allowed; w.body is empty where not.
	_ = w.writeResponse(&http.Response{
		StatusCode:    w.status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: int64(len(w.body)),
		Body:          io.NopCloser(bytes.NewReader(w.body)),
		Close:         true,
	})
}

// writeResponse writes resp to the connection, within readHeaderTimeout.
func (w *directWriter) writeResponse(resp *http.Response) error {
	_ = w.conn.SetWriteDeadline(time.Now().Add(readHeaderTimeout))
	defer func() { _ = w.conn.SetWriteDeadline(time.Time{}) }() // the connection outlives the response
	bw := bufio.NewWriter(w.conn)
	if err := resp.Write(bw); err != nil {
		return err
	}
	return bw.Flush()
}
