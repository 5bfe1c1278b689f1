package server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
)

// session is a gws.SessionStorage that holds only the connection's
// *socket: gws's default is a locked map per connection, hundreds of bytes
// for one value.
type session struct{ sock *socket }

var _ gws.SessionStorage = (*session)(nil)

// Len reports whether the socket is set.
func (s *session) Len() int {
	if s.sock == nil {
		return 0
	}
	return 1
}

// Load returns the socket, whatever the key.
func (s *session) Load(string) (any, bool) { return s.sock, s.sock != nil }

// Delete forgets the socket.
func (s *session) Delete(string) { s.sock = nil }

// Store keeps v if it is a *socket.
func (s *session) Store(_ string, v any) { s.sock, _ = v.(*socket) }

// Range calls f with the socket, if set.
func (s *session) Range(f func(string, any) bool) {
	if s.sock != nil {
		f("socket", s.sock)
	}
}

// closeGrace is how long a socket waits for the client's close frame after
// sending its own, before the read side gives up and the TCP connection is
// closed.
const closeGrace = 2 * time.Second

// socket is one upgraded WebSocket: the actors.Transport the actors write
// to, and the per-connection state of the gws event handler.
type socket struct {
	srv  *Server
	ws   *gws.Conn
	conn net.Conn
	out  *outbound

	pingMu      sync.Mutex
	pinger      *time.Timer
	pingStopped bool

	// deadlineMu orders the read deadline's writers: keepalive, on every
	// frame, and closeSent, once.
	deadlineMu sync.Mutex

	attachment              // set before the read loop starts
	actor      *actors.Conn // set and read only by the read loop

	metrics *routeMetrics // its route's; nil measures nothing
	since   time.Time     // when it was upgraded
	state   atomic.Int32  // stateAuthenticating, stateOpen, ...: its agent_server_sockets_open series

	finished sync.Once
}

// newSocket returns the socket of ws, whose connection pc holds back the
// upgrade's response for the socket's first write.
func (s *Server) newSocket(ws *gws.Conn, pc *prefaceConn, a attachment) *socket {
	sock := &socket{srv: s, ws: ws, conn: pc.Conn, attachment: a, metrics: s.metrics.route(a.route()), since: time.Now()}
	sock.out = newOutbound(sock.conn, s.cfg.Limits.SendQueueBytes, s.cfg.Limits.WriteTimeout)
	sock.out.preface = pc
	sock.out.perFrame = s.perFrameWrites
	sock.out.closeSent = sock.closeSent
	sock.out.closeQueued = func() { pc.muted.Store(true) }
	sock.out.failed = sock.writeFailed
	if sock.metrics != nil {
		sock.out.depth, sock.out.wrote = sock.metrics.queue, sock.metrics.wrote
	}
	if a.firstMessage {
		done := a.done
		sock.done = func(ok bool) {
			if ok && sock.state.CompareAndSwap(stateAuthenticating, stateOpen) {
				sock.metrics.left(stateAuthenticating)
				sock.metrics.opened(stateOpen)
			}
			if done != nil {
				done(ok)
			}
		}
	}
	return sock
}

// opened counts the socket as open, or authenticating when it waits for
// its first message.
func (sock *socket) opened() {
	state := stateOpen
	if sock.firstMessage {
		state = stateAuthenticating
	}
	sock.state.Store(state)
	sock.metrics.opened(state)
}

// Send queues a frame; see actors.Transport.
func (sock *socket) Send(frame []byte) bool { return sock.out.send(frame) }

// Close queues a close frame behind what is queued; see actors.Transport.
func (sock *socket) Close(d core.Disconnect) { sock.out.close(d) }

// Backlog reports the queued and in-flight bytes and the bound, so a replay
// can pace itself; see actors.Backlogger.
func (sock *socket) Backlog() (queued, limit int) { return sock.out.backlog() }

// closeSent runs once our close frame is on the wire: the client has
// closeGrace to answer before the read loop times out and gws closes the
// TCP connection.
func (sock *socket) closeSent() {
	sock.stopPinger()
	sock.deadlineMu.Lock()
	defer sock.deadlineMu.Unlock()
	_ = sock.conn.SetReadDeadline(time.Now().Add(closeGrace))
}

// writeFailed drops a socket whose write failed or timed out.
func (sock *socket) writeFailed(err error) {
	sock.srv.log.Debug("websocket write failed", "conversation", sock.convID, "err", err)
	_ = sock.conn.Close()
}

// keepalive pushes the idle deadline back, unless the socket is closing.
// Its check and its deadline are one step under deadlineMu: a keepalive
// that found the socket open could otherwise set its deadline after
// closeSent's, and a closing socket would wait limits.idle_timeout for
// the client's close frame instead of closeGrace. closeSent runs only
// once the close is queued, so a keepalive after it finds the socket
// closing.
func (sock *socket) keepalive() {
	idle := sock.srv.cfg.Limits.IdleTimeout
	if idle <= 0 {
		return
	}
	sock.deadlineMu.Lock()
	defer sock.deadlineMu.Unlock()
	if sock.out.isClosing() {
		return
	}
	_ = sock.conn.SetReadDeadline(time.Now().Add(idle))
}

// schedulePing sends a ping after limits.ping_interval, and again after
// each one, until the socket closes. It is a timer, not a goroutine.
func (sock *socket) schedulePing() {
	every := sock.srv.cfg.Limits.PingInterval
	if every <= 0 {
		return
	}
	sock.pingMu.Lock()
	defer sock.pingMu.Unlock()
	if sock.pingStopped {
		return
	}
	sock.pinger = time.AfterFunc(every, func() {
		if sock.out.ping() {
			sock.schedulePing()
		}
	})
}

func (sock *socket) stopPinger() {
	sock.pingMu.Lock()
	defer sock.pingMu.Unlock()
	sock.pingStopped = true
	if sock.pinger != nil {
		sock.pinger.Stop()
	}
}

// finish runs once when the read loop ends, whatever ended it (err is
// gws's: a *gws.CloseError when the client sent a close frame).
func (sock *socket) finish(err error) {
	sock.finished.Do(func() {
		sock.stopPinger()
		sock.out.kill()
		_ = sock.conn.Close()
		if sock.actor != nil {
			sock.actor.Closed()
		}
		sock.srv.sockets.remove(sock)
		if state := sock.state.Swap(stateClosed); state != stateNone {
			sock.metrics.left(state)
			sock.metrics.closed(closeCode(sock.out.sentCode(), err), time.Since(sock.since))
		}
	})
}

// closeCode is the code a socket closed with: the one the server sent,
// else the client's, else 1006 (no close frame at all).
func closeCode(sent uint16, err error) uint16 {
	if sent != 0 {
		return sent
	}
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 1006
}

// attachment is what a socket connects to once open.
type attachment struct {
	principal *core.Principal
	convID    string
	replay    actors.Replay
	reject    *core.Disconnect // auth.reject_with: close — close at open instead of connecting

	request      *core.Request     // the handshake, kept for revalidation and first_message
	firstMessage bool              // authenticate by the first frame (see handshake.go)
	done         func(ok bool)     // called once a first_message socket is decided
	runtime      bool              // an agent runtime's socket (runtime.go)
	audit        *core.AuditRecord // who it is, for its audit records (audit.go), shared with the actors
}

// route is the socket's route.
func (a attachment) route() core.Route {
	if a.runtime {
		return core.RouteRuntime
	}
	return core.RouteEvents
}

// handler is the gws event handler shared by every socket; each callback
// runs on the socket's read goroutine.
type handler struct {
	gws.BuiltinEventHandler
}

func socketOf(ws *gws.Conn) *socket { return ws.Session().(*session).sock }

// OnOpen arms the keepalive, or closes the socket at once when
// authentication failed under reject_with: close. The socket was already
// handed to the actors (see upgrade).
func (handler) OnOpen(ws *gws.Conn) {
	sock := socketOf(ws)
	sock.keepalive()
	sock.schedulePing()
	if sock.reject != nil {
		sock.Close(*sock.reject)
	}
}

// OnMessage hands a copy of the frame to the connection actor.
func (handler) OnMessage(ws *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	sock := socketOf(ws)
	sock.keepalive()
	sock.srv.touch()
	if sock.actor == nil || sock.out.isClosing() {
		return
	}
	sock.metrics.received(len(msg.Bytes()))
	sock.actor.Deliver(bytes.Clone(msg.Bytes()))
}

// OnPing answers through the outbound queue, so the pong never cuts into a
// batch being written.
func (handler) OnPing(ws *gws.Conn, payload []byte) {
	sock := socketOf(ws)
	sock.keepalive()
	sock.out.pongTo(payload)
}

// OnPong keeps an otherwise quiet client alive.
func (handler) OnPong(ws *gws.Conn, _ []byte) { socketOf(ws).keepalive() }

// OnClose tells the connection actor and forgets the socket.
func (handler) OnClose(ws *gws.Conn, err error) { socketOf(ws).finish(err) }

// socketSet tracks live sockets so shutdown can close and wait for them.
type socketSet struct {
	mu     sync.Mutex
	live   map[*socket]struct{}
	closed bool
	empty  chan struct{} // closed when the set is closed and empty
}

func newSocketSet() *socketSet {
	return &socketSet{live: make(map[*socket]struct{}), empty: make(chan struct{})}
}

// add registers sock, or reports false once shutdown has begun.
func (ss *socketSet) add(sock *socket) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return false
	}
	ss.live[sock] = struct{}{}
	return true
}

func (ss *socketSet) remove(sock *socket) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.live, sock)
	if ss.closed && len(ss.live) == 0 {
		ss.closeEmpty()
	}
}

func (ss *socketSet) closeEmpty() {
	select {
	case <-ss.empty:
	default:
		close(ss.empty)
	}
}

func (ss *socketSet) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.live)
}

// close refuses new sockets and returns the live ones.
func (ss *socketSet) close() []*socket {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.closed = true
	if len(ss.live) == 0 {
		ss.closeEmpty()
	}
	out := make([]*socket, 0, len(ss.live))
	for sock := range ss.live {
		out = append(out, sock)
	}
	return out
}

// gwsLogger sends gws's own error lines to slog.
type gwsLogger struct{ s *Server }

// Error logs one gws error line.
func (l gwsLogger) Error(v ...any) {
	l.s.log.Error("websocket library error", "detail", fmt.Sprint(v...))
}

var (
	_ actors.Transport  = (*socket)(nil)
	_ actors.Backlogger = (*socket)(nil)
)
