package load

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"
)

// Client-side limits. Every wait is bounded.
const (
	dialTimeout  = 10 * time.Second // TCP connect plus the handshake
	readyTimeout = 10 * time.Second // from the 101 to the first frame
	closeTimeout = 5 * time.Second  // from our close to the read loop's end
	readBufSize  = 2 << 10          // small: 10,000 idle sockets must stay cheap
	bulkBufSize  = 64 << 10         // fan-out subscribers: many frames per read syscall
)

// errNotReady is a first frame that is not the full_state event.
var errNotReady = errors.New("first frame is not a full_state ConversationStateUpdateEvent")

// Markers of the full_state frame, as both servers write it.
var (
	stateKind = []byte(`"kind":"ConversationStateUpdateEvent"`)
	stateKey  = []byte(`"key":"full_state"`)
)

// client dials the events WebSocket of one server with one kind of
// credential.
type client struct {
	addr    string
	creds   Credentials
	nonce   string // makes JWT subjects distinct across runs
	readBuf int    // bytes of each socket's read buffer
}

func newClient(addr string, creds Credentials) (*client, error) {
	if err := creds.check(); err != nil {
		return nil, err
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &client{addr: addr, creds: creds, nonce: hex.EncodeToString(b[:]), readBuf: readBufSize}, nil
}

// credential returns connection i's credential: the key, or a JWT of its
// own (sub bench-<nonce>-<i>) so that no two connections share a cache
// entry.
func (cl *client) credential(i int) (string, error) {
	if cl.creds.Auth != AuthJWT {
		return cl.creds.Key, nil
	}
	claims := jwtlib.MapClaims{
		"sub": fmt.Sprintf("bench-%s-%d", cl.nonce, i),
		"exp": time.Now().Add(time.Hour).Unix(),
	}
	return jwtlib.NewWithClaims(jwtlib.SigningMethodHS256, claims).SignedString([]byte(cl.creds.JWTSecret))
}

// credentials returns n credentials, made before any timing starts.
func (cl *client) credentials(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		c, err := cl.credential(i)
		if err != nil {
			return nil, fmt.Errorf("make credential: %w", err)
		}
		out[i] = c
	}
	return out, nil
}

// request builds the URL and headers carrying cred, with the query
// parameters of extra (a replay request, e.g. after_id) when not nil.
func (cl *client) request(conv, cred string, extra url.Values) (string, http.Header) {
	u := "ws://" + cl.addr + "/sockets/events/" + conv
	h := http.Header{}
	q := url.Values{}
	for k, v := range extra {
		q[k] = v
	}
	switch cl.creds.Auth {
	case AuthQuery:
		q.Set("session_api_key", cred)
	case AuthHeader:
		h.Set("X-Session-API-Key", cred)
	default: // bearer, jwt
		h.Set("Authorization", "Bearer "+cred)
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u, h
}

// HandshakeError is a refused handshake with its HTTP status (0 when the
// connection failed before any status).
type HandshakeError struct {
	Status int
	Err    error
}

func (e *HandshakeError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("handshake: %v", e.Err)
	}
	return fmt.Sprintf("handshake: HTTP %d", e.Status)
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// conn is one generator socket. Its gws read loop calls onMessage for every
// frame after the first, which must be full_state.
type conn struct {
	gws.BuiltinEventHandler
	ws        *gws.Conn
	onMessage func([]byte) // nil: frames after the first are dropped

	gotFirst bool          // read loop only
	ready    chan struct{} // closed when the full_state frame arrived
	closed   chan struct{} // closed when the read loop ended
	closeErr error         // why it ended; read after closed
}

// dial opens a socket to conversation conv with cred and waits for its
// full_state frame. A refused handshake is a *HandshakeError.
func (cl *client) dial(ctx context.Context, conv, cred string, onMessage func([]byte)) (*conn, error) {
	return cl.dialWith(ctx, conv, cred, nil, onMessage)
}

// dialWith is dial with extra query parameters (a replay request).
func (cl *client) dialWith(ctx context.Context, conv, cred string, extra url.Values, onMessage func([]byte)) (*conn, error) {
	u, h := cl.request(conv, cred, extra)
	c := &conn{onMessage: onMessage, ready: make(chan struct{}), closed: make(chan struct{})}
	ws, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr:               u,
		RequestHeader:      h,
		HandshakeTimeout:   dialTimeout,
		ReadBufferSize:     cl.readBuf,
		ReadMaxPayloadSize: 1 << 20,
		NewDialer: func() (gws.Dialer, error) {
			return &net.Dialer{Timeout: dialTimeout}, nil
		},
	})
	if err != nil {
		he := &HandshakeError{Err: err}
		if resp != nil {
			he.Status = resp.StatusCode
		}
		return nil, he
	}
	c.ws = ws
	go ws.ReadLoop()
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-c.ready:
		return c, nil
	case <-c.closed:
		return nil, fmt.Errorf("closed before the first frame: %v", c.closeErr)
	case <-t.C:
		err = errors.New("no first frame within " + readyTimeout.String())
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.close()
	return nil, err
}

// OnMessage checks the first frame and hands the rest to onMessage.
func (c *conn) OnMessage(ws *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	b := msg.Bytes()
	if !c.gotFirst {
		c.gotFirst = true
		if !bytes.Contains(b, stateKind) || !bytes.Contains(b, stateKey) {
			c.closeErr = errNotReady
			_ = ws.NetConn().Close()
			return
		}
		close(c.ready)
		return
	}
	if c.onMessage != nil {
		c.onMessage(b)
	}
}

// OnClose records why the read loop ended.
func (c *conn) OnClose(_ *gws.Conn, err error) {
	if c.closeErr == nil {
		c.closeErr = err
	}
	close(c.closed)
}

// send writes one text frame.
func (c *conn) send(b []byte) error { return c.ws.WriteMessage(gws.OpcodeText, b) }

// isClosed reports whether the read loop has ended.
func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// close sends a 1000 close frame, which also closes the TCP connection,
// and waits for the read loop to end.
func (c *conn) close() {
	_ = c.ws.WriteClose(1000, nil)
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-c.closed:
		return
	case <-t.C:
	}
	_ = c.ws.NetConn().Close()
	t.Reset(closeTimeout)
	select {
	case <-c.closed:
	case <-t.C: // a read loop stuck past a closed socket; leave it
	}
}

// closeAll closes conns, up to par at a time.
func closeAll(conns []*conn, par int) {
	if par < 1 {
		par = 1
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for _, c := range conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.close()
		}()
	}
	wg.Wait()
}
