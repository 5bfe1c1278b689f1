package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Close codes and statuses after which agent-echo stops serving a
// conversation instead of reconnecting: the key is refused (4001, 401),
// it is no runtime key or may not open the conversation (4003, 403), or
// the conversation is gone (4004, 404).
var (
	fatalCloses   = []int{4001, 4003, 4004}
	fatalStatuses = []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound}
)

// Reconnection backoff bounds.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// writeTimeout bounds one frame's write.
const writeTimeout = 10 * time.Second

// session is agent-echo's link to one conversation: the socket, what it
// has seen of the log, and the run under way.
type session struct {
	cfg Config
	id  string
	log *slog.Logger

	mu        sync.Mutex
	conn      *websocket.Conn // nil while disconnected
	lastEvent string          // the last event seen: after_id on reconnect
	seen      map[string]bool // event IDs counted below
	users     []string        // the user messages' texts, in log order
	answered  int             // agent MessageEvents in the log
	status    string          // execution_status as last reported
	acks      map[string]chan frame
	refs      uint64
	run       *runState // nil when no run is under way

	writeMu sync.Mutex
}

func newSession(cfg Config, id string) *session {
	return &session{cfg: cfg, id: id, log: cfg.Log.With("conversation", id), seen: map[string]bool{}, acks: map[string]chan frame{}}
}

// frame is every field agent-echo reads from a server frame: an event
// ("kind"), or a runtime protocol frame ("type").
type frame struct {
	Type    string          `json:"type"`
	Kind    string          `json:"kind"`
	ID      string          `json:"id"`
	Source  string          `json:"source"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	Command string          `json:"command"`
	Params  json.RawMessage `json:"params"`
	Ref     string          `json:"ref"`
	Code    string          `json:"code"`
	Detail  string          `json:"detail"`
	State   *struct {
		ExecutionStatus string `json:"execution_status"`
	} `json:"state"`
	LLM *struct {
		Content json.RawMessage `json:"content"`
	} `json:"llm_message"`
}

// serve keeps the conversation's socket up until ctx ends or the server
// refuses it for good.
func (s *session) serve(ctx context.Context) {
	backoff := minBackoff
	for {
		connected, err := s.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		if code, ok := fatal(err); ok {
			s.log.Warn("the server refused this runtime; not retrying", "code", code, "err", err)
			return
		}
		if connected {
			backoff = minBackoff
		}
		s.log.Info("socket dropped; reconnecting", "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// fatal reports whether err ends serving the conversation, and its code.
func fatal(err error) (int, bool) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		for _, c := range fatalCloses {
			if ce.Code == c {
				return c, true
			}
		}
	}
	var he *handshakeError
	if errors.As(err, &he) {
		for _, c := range fatalStatuses {
			if he.status == c {
				return c, true
			}
		}
	}
	return 0, false
}

// handshakeError is a refused WebSocket handshake.
type handshakeError struct{ status int }

func (e *handshakeError) Error() string { return "handshake refused: HTTP " + strconv.Itoa(e.status) }

// connect opens the socket, asking for the whole log the first time and
// for what follows the last event seen after that, and reads it until it
// drops. connected says whether the handshake succeeded.
func (s *session) connect(ctx context.Context) (connected bool, err error) {
	u := *s.cfg.Server
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path = "/sockets/runtime/" + s.id
	s.mu.Lock()
	if s.lastEvent == "" {
		u.RawQuery = "resend_mode=all"
	} else {
		u.RawQuery = "after_id=" + url.QueryEscape(s.lastEvent)
	}
	s.mu.Unlock()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.DialContext(ctx, u.String(), http.Header{"X-Session-API-Key": {s.cfg.Key}})
	if err != nil {
		if resp != nil {
			return false, &handshakeError{status: resp.StatusCode}
		}
		return false, err
	}
	conn.SetReadLimit(64 << 20) // state frames carry the whole agent
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	s.log.Info("attached", "resume", u.RawQuery)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer func() {
		stop()
		conn.Close()
		s.disconnected()
	}()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return true, err
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			s.log.Warn("unreadable frame from the server", "err", err)
			continue
		}
		s.handle(ctx, &f)
	}
}

// disconnected forgets the socket: the run stops (the server reports the
// lost run) and publishes waiting for an answer fail.
func (s *session) disconnected() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = nil
	if s.run != nil {
		s.run.cancel()
	}
	for ref, ch := range s.acks {
		close(ch)
		delete(s.acks, ref)
	}
}

// handle takes one frame from the server.
func (s *session) handle(ctx context.Context, f *frame) {
	switch {
	case f.Type == "state":
		if f.State != nil {
			s.mu.Lock()
			s.status = f.State.ExecutionStatus
			s.mu.Unlock()
		}
	case f.Kind != "":
		s.event(f)
	case f.Type == "command":
		s.command(ctx, f)
	case f.Type == "published" || f.Type == "error":
		s.mu.Lock()
		ch := s.acks[f.Ref]
		delete(s.acks, f.Ref)
		s.mu.Unlock()
		if ch != nil {
			ch <- *f
		} else if f.Type == "error" {
			s.log.Warn("server error", "code", f.Code, "detail", f.Detail)
		}
	}
}

// event counts an event of the log: user messages to answer, agent
// messages that answered them, the reported status.
func (s *session) event(f *frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastEvent = f.ID
	if s.seen[f.ID] {
		return
	}
	s.seen[f.ID] = true
	switch {
	case f.Kind == "MessageEvent" && f.Source == "user" && f.LLM != nil:
		s.users = append(s.users, text(f.LLM.Content))
	case f.Kind == "MessageEvent" && f.Source == "agent":
		s.answered++
	case f.Kind == "ConversationStateUpdateEvent" && f.Key == "execution_status":
		_ = json.Unmarshal(f.Value, &s.status)
	}
}

// text joins a message's text parts; content may also be a bare string.
func text(content json.RawMessage) string {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return s
	}
	var parts []struct {
		Type, Text string
	}
	_ = json.Unmarshal(content, &parts)
	out := ""
	for _, p := range parts {
		if p.Type == "text" {
			if out != "" {
				out += " "
			}
			out += p.Text
		}
	}
	return out
}

// publish sends an event and waits for the server's answer: its ID, or an
// error. The ack comes after the event itself has come back on the socket.
func (s *session) publish(ctx context.Context, event any) (string, error) {
	s.mu.Lock()
	s.refs++
	ref := strconv.FormatUint(s.refs, 10)
	ch := make(chan frame, 1)
	s.acks[ref] = ch
	s.mu.Unlock()
	if err := s.write(map[string]any{"type": "publish", "ref": ref, "event": event}); err != nil {
		s.mu.Lock()
		delete(s.acks, ref)
		s.mu.Unlock()
		return "", err
	}
	select {
	case f, ok := <-ch:
		if !ok {
			return "", errors.New("socket dropped before the answer")
		}
		if f.Type == "error" {
			return "", fmt.Errorf("publish refused: %s: %s", f.Code, f.Detail)
		}
		return f.ID, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// reply answers the command id with an HTTP status and a JSON body.
func (s *session) reply(id string, status int, body any) {
	if err := s.write(map[string]any{"type": "reply", "id": id, "status": status, "body": body}); err != nil {
		s.log.Warn("reply", "err", err)
	}
}

// write sends one JSON frame.
func (s *session) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		return errors.New("not connected")
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return conn.WriteMessage(websocket.TextMessage, b)
}
