package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// paramConversationID is the events route's path wildcard.
const paramConversationID = "conversation_id"

// authRetryAfter is the Retry-After, in seconds, of a 503 when the
// authenticator chain could not decide.
const authRetryAfter = "1"

// detailOverloaded is the detail of a 503 when the authenticators were
// saturated: every plugin call slot busy past auth.queue.
const detailOverloaded = "Authentication is overloaded; retry shortly"

// serveEvents is GET /sockets/events/{conversation_id}. Everything that can
// refuse the request does so before the upgrade, with a status and a JSON
// detail: 400 for a malformed ID or query, 403 for a foreign Origin, 401 when
// authentication fails (or, under auth.reject_with: close, a 101 then a 4001
// close), 503 with Retry-After when it cannot decide or the plugins are
// saturated past auth.queue (counted as a failure when the request caused
// it, core.Result.RequestFault), 403 when the principal's scopes exclude
// the conversation. The conversation's existence and the subscriber cap are
// the actors' to check, after the upgrade (4004, 1013).
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	r, span := s.startHandshake(r, core.RouteEvents)
	defer endHandshake(span, w)
	req, id, replay, ok := s.socketRequest(w, r, core.RouteEvents)
	if !ok {
		return
	}
	addr := remoteIP(r.RemoteAddr)
	res, ok := s.socketAuth(w, r, req)
	if !ok {
		return
	}
	if res.Decision != core.Allow {
		if s.firstMessageAllowed(res) {
			s.upgradeUnauthenticated(w, r, req, id, replay)
			return
		}
		s.recordAuth(r, core.NewAuditRecord(core.AuditHandshake, req, res))
		s.metrics.refused(core.RouteEvents, refusedUnauthorized)
		s.abuse.fail(addr, time.Now())
		if s.cfg.Auth.RejectWith == config.RejectWithClose {
			s.upgrade(w, r, attachment{reject: &core.DisconnectAuthFailed})
			return
		}
		refuse(w, http.StatusUnauthorized, "Authentication failed")
		return
	}
	if !res.Principal.CanAccess(id) {
		s.refuseForbidden(w, r, req, res, core.ClassForbiddenScope, "Forbidden: this credential may not open that conversation")
		return
	}
	s.recordAuth(r, core.NewAuditRecord(core.AuditHandshake, req, res))
	s.upgrade(w, r, attachment{principal: res.Principal, convID: id, replay: replay, request: s.actors.Retain(req), audit: socketAudit(r, req)})
}

// refuseForbidden answers 403 to an allowed principal that may not open
// what it asked for (class says why), and records the refusal.
func (s *Server) refuseForbidden(w http.ResponseWriter, r *http.Request, req *core.Request, res core.Result, class, detail string) {
	rec := core.NewAuditRecord(core.AuditHandshake, req, res)
	rec.Decision, rec.ReasonClass = core.DecisionDeny, class
	s.recordAuth(r, rec)
	s.metrics.refused(req.Route, refusedForbidden)
	refuse(w, http.StatusForbidden, detail)
}

// socketAuth runs req's chain. An expired principal is a deny; a chain
// that cannot decide is answered 503 here (and recorded), and ok is false.
// Otherwise res is an Allow or a Deny for the caller to act on and record.
func (s *Server) socketAuth(w http.ResponseWriter, r *http.Request, req *core.Request) (res core.Result, ok bool) {
	res = s.actors.Authenticate(r.Context(), req)
	if res.Decision == core.Allow && res.Principal.Expired(time.Now()) {
		res = core.Result{Decision: core.Deny, Reason: core.ReasonExpired, Authenticator: res.Authenticator, Cached: res.Cached}
	}
	if res.Decision == core.Error {
		s.recordAuth(r, core.NewAuditRecord(core.AuditHandshake, req, res))
		if res.RequestFault { // e.g. a token naming an unknown signing key
			s.abuse.fail(remoteIP(r.RemoteAddr), time.Now())
		}
		w.Header().Set("Retry-After", authRetryAfter)
		if errors.Is(res.Err, core.ErrOverloaded) {
			s.metrics.refused(req.Route, refusedAuthOverloaded)
			refuse(w, http.StatusServiceUnavailable, detailOverloaded)
			return res, false
		}
		s.metrics.refused(req.Route, refusedAuthError)
		refuse(w, http.StatusServiceUnavailable, "Authentication is temporarily unavailable")
		return res, false
	}
	return res, true
}

// socketRequest checks a WebSocket handshake for route before any
// authentication: the conversation ID (400), the upgrade (400), the Origin
// (403), the replay query (400) and the address's failure budget (429). It
// answers the refusals itself and reports ok false for them.
func (s *Server) socketRequest(w http.ResponseWriter, r *http.Request, route core.Route) (req *core.Request, id string, replay actors.Replay, ok bool) {
	id, err := core.NormalizeID(r.PathValue(paramConversationID))
	if err != nil {
		s.metrics.refused(route, refusedBadID)
		refuse(w, http.StatusBadRequest, "conversation id is not a UUID")
		return nil, "", replay, false
	}
	if !isUpgrade(r) {
		s.metrics.refused(route, refusedNotWebSocket)
		refuse(w, http.StatusBadRequest, "expected a WebSocket upgrade request")
		return nil, "", replay, false
	}
	origin := r.Header.Get("Origin")
	if !s.originAllowed(origin, r.Host) {
		s.metrics.refused(route, refusedOrigin)
		refuse(w, http.StatusForbidden, "Origin not allowed")
		return nil, "", replay, false
	}
	query := core.ParseQuery(r.URL.RawQuery)
	if replay, err = parseReplay(query); err != nil {
		s.metrics.refused(route, refusedBadQuery)
		refuse(w, http.StatusBadRequest, err.Error())
		return nil, "", replay, false
	}
	if wait, blocked := s.abuse.blocked(remoteIP(r.RemoteAddr), time.Now()); blocked {
		s.rateLimited(r, route, id, rateLimitFailures)
		refuseTooMany(w, wait, "Too many failed authentication attempts")
		return nil, "", replay, false
	}
	return &core.Request{
		Route:        route,
		Method:       r.Method,
		Path:         r.URL.Path,
		PathParams:   map[string]string{paramConversationID: id},
		Query:        query,
		Header:       r.Header,
		RemoteAddr:   r.RemoteAddr,
		Subprotocols: subprotocols(r.Header),
		Origin:       origin,

		ClientCertificates: clientCertificates(r),
	}, id, replay, true
}

// firstMessageAllowed reports whether a socket whose handshake res denied
// may still authenticate by its first frame: every authenticator abstained
// (no credential at all; a present but wrong one is never given a second
// chance) and the events chain lists first_message.
func (s *Server) firstMessageAllowed(res core.Result) bool {
	return res.Decision == core.Deny && res.Authenticator == "" && res.Reason == core.ReasonNoCredentials &&
		s.actors.ChainHas(core.RouteEvents, core.FirstMessageAuthenticator)
}

// upgradeUnauthenticated upgrades a socket that will authenticate by its
// first frame, within auth.first_message_timeout, if its address is under
// auth.unauthenticated_per_address such sockets; otherwise it answers 429.
// The reservation ends when the connection actor decides; a failure then
// counts against the address like a refused handshake.
func (s *Server) upgradeUnauthenticated(w http.ResponseWriter, r *http.Request, req *core.Request, id string, replay actors.Replay) {
	addr := remoteIP(r.RemoteAddr)
	if !s.abuse.reserve(addr) {
		s.rateLimited(r, req.Route, id, rateLimitUnauthSocket)
		refuseTooMany(w, time.Second, "Too many unauthenticated connections from this address")
		return
	}
	var once sync.Once
	done := func(ok bool) {
		once.Do(func() {
			s.abuse.release(addr)
			if !ok {
				s.abuse.fail(addr, time.Now())
			}
		})
	}
	s.upgrade(w, r, attachment{convID: id, replay: replay, request: s.actors.Retain(req), firstMessage: true, done: done, audit: socketAudit(r, req)})
}

// connect hands an opened socket to the actors.
func (s *Server) connect(sock *socket) *actors.Conn {
	return s.actors.ConnectSocket(sock, actors.Attach{
		Principal:      sock.principal,
		Request:        sock.request,
		ConversationID: sock.convID,
		Replay:         sock.replay,
		FirstMessage:   sock.firstMessage,
		AuthTimeout:    s.cfg.Auth.FirstMessageTimeout,
		Done:           sock.done,
		Runtime:        sock.runtime,
		Audit:          sock.audit,
	})
}

// upgrade switches protocols, connects the socket to the actors as a says
// and starts its read loop.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, a attachment) {
	up := s.upgrader
	if a.runtime {
		up = s.runtimeUpgrader
	} else if offered := subprotocols(r.Header); slices.Contains(offered, core.Subprotocol) {
		// gws reads only the first header line; hand it every offer in one.
		r.Header.Set("Sec-WebSocket-Protocol", strings.Join(offered, ", "))
		up = s.protoUpgrader
	}
	failed := func(err error) {
		s.metrics.refused(a.route(), refusedUpgradeFailed)
		s.log.DebugContext(r.Context(), "websocket upgrade failed", "err", err)
		if a.done != nil {
			a.done(false)
		}
	}
	pc, br, err := hijack(w, s.cfg.Limits.WriteTimeout)
	if err != nil { // not an HTTP/1.1 connection: nothing was taken over
		failed(err)
		refuse(w, http.StatusInternalServerError, "This connection cannot be upgraded to a WebSocket")
		return
	}
	ws, err := up.UpgradeFromConn(pc, br, r)
	if err != nil { // gws has answered 400 and closed the connection
		failed(err)
		return
	}
	sock := s.newSocket(ws, pc, a)
	ws.Session().(*session).sock = sock
	added := s.sockets.add(sock)
	if added {
		sock.opened()
	}
	switch {
	case !added:
		sock.reject = &core.DisconnectShutdown
		if a.done != nil {
			a.done(false)
		}
	case sock.reject == nil:
		// Connect here, on the handshake's goroutine, rather than in
		// OnOpen: the read loop's goroutine then never runs the deep
		// actor calls, and its stack stays at its starting size for as
		// long as the socket is idle.
		sock.actor = s.connect(sock)
	}
	if a.firstMessage {
		// The client speaks first, once it has the 101.
		if err := pc.release(); err != nil {
			_ = pc.Conn.Close()
		}
	} else {
		pc.armRelease(prefaceHold)
	}
	go ws.ReadLoop()
}

// newUpgraders returns the plain upgrader and the one that echoes
// core.Subprotocol. gws refuses a handshake that offers none of an
// upgrader's subprotocols, so a client that offers ours gets the second and
// every other client the first: no other offered value, a token least of
// all, is ever echoed.
func (s *Server) newUpgraders() (plain, proto *gws.Upgrader) {
	return s.newUpgrader(s.cfg.Limits.MaxFrameBytes), s.newUpgrader(s.cfg.Limits.MaxFrameBytes, core.Subprotocol)
}

// newUpgrader returns an upgrader reading frames of up to maxFrame bytes
// (bigger ones close with 1009) that echoes protos.
func (s *Server) newUpgrader(maxFrame int, protos ...string) *gws.Upgrader {
	opt := func(protos ...string) *gws.ServerOption {
		return &gws.ServerOption{
			ReadMaxPayloadSize: maxFrame,
			CheckUtf8Enabled:   true,
			Recovery:           gws.Recovery,
			Logger:             gwsLogger{s},
			SubProtocols:       protos,
			NewSession:         func() gws.SessionStorage { return &session{} },
		}
	}
	return gws.NewUpgrader(handler{}, opt(protos...))
}

// isUpgrade reports whether r asks for a WebSocket.
func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// subprotocols returns the offered Sec-WebSocket-Protocol values in order.
func subprotocols(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// originAllowed applies server.allowed_origins: no Origin (a non-browser
// client) is allowed; otherwise the Origin must be listed ("*" lists all)
// or name the same host as the request.
func (s *Server) originAllowed(origin, host string) bool {
	if origin == "" {
		return true
	}
	norm := strings.TrimSuffix(strings.ToLower(origin), "/")
	for _, a := range s.cfg.Server.AllowedOrigins {
		if a == "*" || strings.TrimSuffix(strings.ToLower(a), "/") == norm {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// parseReplay reads the replay request: resend_mode (all, or since with
// after_timestamp) wins over after_id, which wins over resend_all.
func parseReplay(q map[string][]string) (actors.Replay, error) {
	first := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	switch mode := first("resend_mode"); strings.ToLower(mode) {
	case "all":
		return actors.Replay{Mode: actors.ReplayAll}, nil
	case "since":
		raw := first("after_timestamp")
		if raw == "" {
			return actors.Replay{}, errors.New("after_timestamp is required with resend_mode=since")
		}
		t, err := core.ParseTimestamp(raw)
		if err != nil {
			return actors.Replay{}, fmt.Errorf("after_timestamp: %w", err)
		}
		return actors.Replay{Mode: actors.ReplaySince, Since: t}, nil
	case "":
	default:
		return actors.Replay{}, fmt.Errorf("resend_mode must be all or since, not %q", clip(mode, 32))
	}
	if id := first("after_id"); id != "" {
		return actors.Replay{Mode: actors.ReplayAfterID, AfterID: id}, nil
	}
	if raw := first("resend_all"); raw != "" {
		all, err := strconv.ParseBool(raw)
		if err != nil {
			return actors.Replay{}, fmt.Errorf("resend_all must be true or false, not %q", clip(raw, 32))
		}
		if all {
			return actors.Replay{Mode: actors.ReplayAll}, nil
		}
	}
	return actors.Replay{}, nil
}

// clip shortens s to n bytes for an error detail.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
