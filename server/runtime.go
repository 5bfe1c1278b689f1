package server

import (
	"net/http"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// runtimeFrameSlack is what a runtime frame may hold beyond the event it
// publishes: the publish envelope around it.
const runtimeFrameSlack = 64 << 10

// runtimeFrameBytes is the largest frame an agent runtime may send: an
// event of limits.max_event_bytes in its publish envelope, and never less
// than a client may send. An event that fits the frame but not the event
// limit once sealed is refused with an error frame, the socket staying open.
func runtimeFrameBytes(l config.Limits) int {
	return max(l.MaxEventBytes+runtimeFrameSlack, l.MaxFrameBytes)
}

// serveRuntime is GET /sockets/runtime/{conversation_id}, where an agent
// runtime attaches to a conversation (docs/runtime.md). It is refused like
// the events socket before the upgrade (400, 403, 429), authenticated by the
// runtime chain (401, 503), and refused with 403 unless the principal
// carries the runtime role and may open the conversation. There is no
// first-message authentication here: a runtime sends its credential in the
// handshake.
func (s *Server) serveRuntime(w http.ResponseWriter, r *http.Request) {
	r, span := s.startHandshake(r, core.RouteRuntime)
	defer endHandshake(span, w)
	req, id, replay, ok := s.socketRequest(w, r, core.RouteRuntime)
	if !ok {
		return
	}
	res, ok := s.socketAuth(w, r, req)
	if !ok {
		return
	}
	if res.Decision != core.Allow {
		s.recordAuth(r, core.NewAuditRecord(core.AuditHandshake, req, res))
		s.metrics.refused(core.RouteRuntime, refusedUnauthorized)
		s.abuse.fail(remoteIP(r.RemoteAddr), time.Now())
		refuse(w, http.StatusUnauthorized, "Authentication failed")
		return
	}
	if !res.Principal.HasRole(core.RoleRuntime) {
		s.refuseForbidden(w, r, req, res, core.ClassForbiddenRole, "Forbidden: this credential is not an agent runtime's (see auth.runtime_keys)")
		return
	}
	if !res.Principal.CanAccess(id) {
		s.refuseForbidden(w, r, req, res, core.ClassForbiddenScope, "Forbidden: this credential may not open that conversation")
		return
	}
	s.recordAuth(r, core.NewAuditRecord(core.AuditHandshake, req, res))
	s.upgrade(w, r, attachment{principal: res.Principal, convID: id, replay: replay, request: s.actors.Retain(req), runtime: true, audit: socketAudit(r, req)})
}
