// Package baseline is the reference WebSocket server that agent-bench
// measures agent-server against: the thinnest server our stack allows,
// written directly on github.com/lxzan/gws, with no actors, no plugins, no
// store and no access log.
//
// It speaks just enough of agent-server's wire contract for every load
// scenario to run against it unchanged:
//
//   - GET /sockets/events/{id}, any non-empty id, no conversation to create;
//   - a session API key from ?session_api_key=, else X-Session-API-Key, else
//     Authorization: Bearer (the first present decides), compared in process
//     with crypto/subtle before the upgrade; a refusal is HTTP 401 with
//     {"detail":"Authentication failed"}; with Options.JWTSecret an HS256
//     bearer JWT with sub and exp is checked in process instead;
//   - a first frame that is a ConversationStateUpdateEvent with key
//     full_state, rendered once per path;
//   - a client frame {"role":"user","content":"<text>"} rendered once as a
//     MessageEvent and queued to every connection on the same path, the
//     sender included. Anything else is ignored;
//   - ?after_id=<event id>: after full_state, the events of the path that
//     came after that one, from a small in-memory log (the last LogSize
//     events of the path, kept while the path has a socket), then live
//     ones, with nothing lost or sent twice; an id no longer in the log
//     gets a ServerErrorEvent with code unknown_event_id instead, as
//     agent-server answers an id not in its log.
//
// Fan-out is what makes a baseline strong or weak, so it is done the fast
// way: each event is framed once (header and payload in one slice shared by
// every connection), and each connection has an outbound queue whose
// pending frames a short-lived goroutine writes together with one writev
// (net.Buffers). gws's Broadcaster is not used: it writes once per message
// per connection. A connection whose queue would pass Options.QueueBytes is
// dropped.
package baseline

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/lxzan/gws"
)

// eventsPrefix is the path of the events WebSocket, before the id.
const eventsPrefix = "/sockets/events/"

// Defaults for Options left at zero: the same bounds agent-server uses.
const (
	defaultQueueBytes    = 1 << 20
	defaultMaxFrameBytes = 64 << 10
	defaultLogSize       = 1024
)

// Options configures a Server.
type Options struct {
	Keys          []string // valid session API keys; at least one
	JWTSecret     string   // optional: also accept HS256 bearer JWTs signed with it
	QueueBytes    int      // outbound bytes one connection may have pending
	MaxFrameBytes int      // largest client frame
	LogSize       int      // events each path keeps for after_id (default 1024)
}

// Server is the reference server. It is an http.Handler for the events
// route; every other path is 404.
type Server struct {
	keys       [][]byte
	jwt        *jwtlib.Parser
	jwtSecret  []byte
	queueBytes int
	logSize    int
	upgrader   *gws.Upgrader

	mu    sync.Mutex
	rooms map[string]*room
}

// New returns a Server. It has no side effects.
func New(opts Options) (*Server, error) {
	if len(opts.Keys) == 0 {
		return nil, errors.New("baseline: at least one key is required")
	}
	s := &Server{queueBytes: opts.QueueBytes, logSize: opts.LogSize, rooms: make(map[string]*room)}
	for _, k := range opts.Keys {
		if k == "" {
			return nil, errors.New("baseline: empty key")
		}
		s.keys = append(s.keys, []byte(k))
	}
	if opts.JWTSecret != "" {
		s.jwtSecret = []byte(opts.JWTSecret)
		s.jwt = jwtlib.NewParser(jwtlib.WithValidMethods([]string{"HS256"}), jwtlib.WithExpirationRequired())
	}
	if s.queueBytes <= 0 {
		s.queueBytes = defaultQueueBytes
	}
	if s.logSize <= 0 {
		s.logSize = defaultLogSize
	}
	maxFrame := opts.MaxFrameBytes
	if maxFrame <= 0 {
		maxFrame = defaultMaxFrameBytes
	}
	s.upgrader = gws.NewUpgrader(handler{s: s}, &gws.ServerOption{
		ReadMaxPayloadSize: maxFrame,
		CheckUtf8Enabled:   true,
		Recovery:           gws.Recovery,
		NewSession:         func() gws.SessionStorage { return &session{} },
	})
	return s, nil
}

// ServeHTTP authenticates and upgrades GET /sockets/events/{id}.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, eventsPrefix)
	if !ok || id == "" || strings.Contains(id, "/") || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	query := r.URL.Query()
	if !s.authenticate(r, query) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"detail":"Authentication failed"}`))
		return
	}
	ws, err := s.upgrader.Upgrade(w, r)
	if err != nil { // gws has answered 400 and closed the connection
		return
	}
	c := &conn{ws: ws, nc: ws.NetConn(), limit: s.queueBytes}
	ws.Session().(*session).c = c
	s.join(id, c, query.Get("after_id"))
	go ws.ReadLoop()
}

// Serve serves ln until ctx ends, then closes the listener and every
// socket.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	_ = srv.Close()
	s.mu.Lock()
	var all []*conn
	for _, rm := range s.rooms {
		rm.mu.Lock()
		for c := range rm.conns {
			all = append(all, c)
		}
		rm.mu.Unlock()
	}
	s.mu.Unlock()
	for _, c := range all {
		_ = c.nc.Close()
	}
	<-errc
	return nil
}

// authenticate applies the first credential present: the query key, the
// X-Session-API-Key header, then a bearer token (a JWT when a secret is
// set and the token has JWT shape, else a key).
func (s *Server) authenticate(r *http.Request, query url.Values) bool {
	if k := query.Get("session_api_key"); k != "" {
		return s.keyValid(k)
	}
	if k := r.Header.Get("X-Session-API-Key"); k != "" {
		return s.keyValid(k)
	}
	auth := r.Header.Get("Authorization")
	if len(auth) < 7 || !strings.EqualFold(auth[:7], "bearer ") {
		return false
	}
	tok := strings.TrimSpace(auth[7:])
	if s.jwt != nil && strings.Count(tok, ".") == 2 {
		return s.jwtValid(tok)
	}
	return s.keyValid(tok)
}

// keyValid compares k with every key in constant time.
func (s *Server) keyValid(k string) bool {
	ok := 0
	for _, key := range s.keys {
		ok |= subtle.ConstantTimeCompare([]byte(k), key)
	}
	return ok == 1
}

func (s *Server) jwtValid(tok string) bool {
	var claims jwtlib.RegisteredClaims
	_, err := s.jwt.ParseWithClaims(tok, &claims, func(*jwtlib.Token) (any, error) { return s.jwtSecret, nil })
	return err == nil && claims.Subject != ""
}

// room is the set of connections on one path, with the full_state frame
// they all receive first and the log of its last events.
type room struct {
	id    string
	state []byte // framed full_state event
	mu    sync.Mutex
	conns map[*conn]struct{}
	log   []logged // a ring of the last events, log[next%len(log)] the oldest once full
	next  int      // events ever logged
	last  string   // the id of the last event logged: the next one's parent_id
}

// logged is one event of a room's log: its id and its frame.
type logged struct {
	id    string
	frame []byte
}

// join queues the full_state frame, then what the room's log holds after
// afterID (when not empty), and adds c to its room, all under the room's
// lock, so no broadcast can come between them.
func (s *Server) join(id string, c *conn, afterID string) {
	s.mu.Lock()
	rm := s.rooms[id]
	if rm == nil {
		rm = &room{id: id, state: frame(stateEvent(id)), conns: make(map[*conn]struct{}), log: make([]logged, 0, s.logSize)}
		s.rooms[id] = rm
	}
	rm.mu.Lock() // before s.mu is released, so leave cannot delete rm meanwhile
	s.mu.Unlock()
	c.room = rm
	c.push(rm.state)
	if afterID != "" {
		rm.replay(c, afterID)
	}
	rm.conns[c] = struct{}{}
	rm.mu.Unlock()
}

// replay queues on c the logged events after afterID, or an
// unknown_event_id error when the log does not hold it. Callers hold mu.
func (rm *room) replay(c *conn, afterID string) {
	n := len(rm.log)
	for back := 1; back <= n; back++ { // newest first: a reconnecting client missed little
		if rm.log[(rm.next-back)%n].id != afterID {
			continue
		}
		for i := back - 1; i >= 1; i-- {
			c.push(rm.log[(rm.next-i)%n].frame)
		}
		return
	}
	c.push(frame(errorEvent("unknown_event_id", "event is not in this conversation's log; nothing was replayed")))
}

// record appends one event to the log, dropping the oldest when it is
// full. Callers hold mu.
func (rm *room) record(id string, f []byte) {
	e := logged{id: id, frame: f}
	if len(rm.log) < cap(rm.log) {
		rm.log = append(rm.log, e)
	} else {
		rm.log[rm.next%len(rm.log)] = e
	}
	rm.next++
	rm.last = id
}

// leave removes c from its room and forgets an empty room.
func (s *Server) leave(c *conn) {
	rm := c.room
	if rm == nil {
		return
	}
	s.mu.Lock()
	rm.mu.Lock()
	delete(rm.conns, c)
	if len(rm.conns) == 0 && s.rooms[rm.id] == rm {
		delete(s.rooms, rm.id)
	}
	rm.mu.Unlock()
	s.mu.Unlock()
}

// broadcast renders a user message with content as the room's next event
// (its parent_id the last one's), logs it and queues it on every
// connection of rm.
func (rm *room) broadcast(content []byte) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	id, ev := messageEvent(content, rm.last)
	f := frame(ev)
	rm.record(id, f)
	for c := range rm.conns {
		c.push(f)
	}
}

// handler is the gws event handler; callbacks run on each socket's read
// goroutine.
type handler struct {
	gws.BuiltinEventHandler
	s *Server
}

// OnMessage renders a user message once and broadcasts it.
func (h handler) OnMessage(ws *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	c := ws.Session().(*session).c
	if content := userContent(msg.Bytes()); content != nil {
		c.room.broadcast(content)
	}
}

// OnClose drops the connection from its room.
func (h handler) OnClose(ws *gws.Conn, _ error) {
	c := ws.Session().(*session).c
	c.kill()
	h.s.leave(c)
}

// stateEvent renders the ConversationStateUpdateEvent full_state of id.
func stateEvent(id string) []byte {
	now := time.Now().UTC().Format(timestampLayout)
	v, _ := json.Marshal(struct {
		ID              string `json:"id"`
		ExecutionStatus string `json:"execution_status"`
		CreatedAt       string `json:"created_at"`
		UpdatedAt       string `json:"updated_at"`
	}{id, "idle", now, now})
	_, b := envelope("environment", "ConversationStateUpdateEvent", "")
	return append(b, append(append([]byte(`,"key":"full_state","value":`), v...), '}')...)
}

// errorEvent renders a ServerErrorEvent for one client.
func errorEvent(code, detail string) []byte {
	v, _ := json.Marshal(struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}{code, detail})
	_, b := envelope("environment", "ServerErrorEvent", "")
	return append(append(append(b, ','), v[1:len(v)-1]...), '}')
}

// userContent returns the content of a {"role":"user","content":"<text>"}
// frame, an already valid JSON string, or nil for any other frame.
func userContent(data []byte) []byte {
	var m struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(data, &m) != nil || m.Role != "user" || len(m.Content) == 0 || m.Content[0] != '"' {
		return nil
	}
	return m.Content
}

// messageEvent renders a user message with content (a JSON string) as a
// MessageEvent whose parent_id is parent (none when empty), as
// agent-server stamps its events, and returns its id too.
func messageEvent(content []byte, parent string) (string, []byte) {
	id, b := envelope("user", "MessageEvent", parent)
	b = append(b, `,"llm_message":{"role":"user","content":[{"type":"text","text":`...)
	b = append(b, content...)
	return id, append(b, `}]},"activated_skills":[]}`...)
}

// timestampLayout is agent-server's event timestamp format.
const timestampLayout = "2006-01-02T15:04:05.000000Z"

// envelope starts an event object with a fresh id and timestamp, and
// parent_id unless parent is empty, and returns the id too.
func envelope(source, kind, parent string) (string, []byte) {
	id := uuid.NewString()
	b := make([]byte, 0, 256)
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","timestamp":"`...)
	b = time.Now().UTC().AppendFormat(b, timestampLayout)
	b = append(b, `","source":"`...)
	b = append(b, source...)
	if parent != "" {
		b = append(b, `","parent_id":"`...)
		b = append(b, parent...)
	}
	b = append(b, `","kind":"`...)
	b = append(b, kind...)
	return id, append(b, '"')
}

// session is a gws.SessionStorage that holds only the connection, smaller
// than gws's default map.
type session struct{ c *conn }

func (*session) Len() int                         { return 1 }
func (s *session) Load(string) (any, bool)        { return s.c, s.c != nil }
func (*session) Delete(string)                    {}
func (*session) Store(string, any)                {}
func (s *session) Range(f func(string, any) bool) { f("conn", s.c) }

var (
	_ http.Handler       = (*Server)(nil)
	_ gws.SessionStorage = (*session)(nil)
)
