package server

import (
	"net/http"

	"github.com/agent-server/agent-server/core"
)

// recordAuth counts an authentication decision the edge acts on and writes
// its audit record, with the request's ID.
func (s *Server) recordAuth(r *http.Request, rec core.AuditRecord) {
	rec.RequestID = infoOf(r.Context()).id
	s.actors.RecordAuth(&rec)
}

// socketAudit is who an upgraded socket is, for its later audit records
// (first message, expiry, revocation): route, remote address, conversation
// and the handshake's request ID.
func socketAudit(r *http.Request, req *core.Request) *core.AuditRecord {
	return &core.AuditRecord{Route: req.Route, RemoteAddr: req.RemoteAddr, Conversation: req.PathParams[paramConversationID], RequestID: infoOf(r.Context()).id}
}

// rateLimited counts a 429 answered before any plugin ran (limit is
// rateLimitFailures or rateLimitUnauthSocket), and records it as a deny.
// convID is the conversation the request names, "" for none.
func (s *Server) rateLimited(r *http.Request, route core.Route, convID, limit string) {
	s.metrics.rateLimited(route, limit)
	if route != core.RouteREST {
		s.metrics.refused(route, refusedRateLimited)
	}
	reason := "auth.failures_per_minute reached for this address"
	if limit == rateLimitUnauthSocket {
		reason = "auth.unauthenticated_per_address reached for this address"
	}
	s.recordAuth(r, core.AuditRecord{Event: auditEvent(route), Route: route, RemoteAddr: r.RemoteAddr, Conversation: convID,
		Plugin: core.PluginNone, Decision: core.DecisionDeny, ReasonClass: core.ClassRateLimited, Reason: reason})
}

// auditEvent is the audit event of a decision on route's requests.
func auditEvent(route core.Route) string {
	if route == core.RouteREST {
		return core.AuditRequest
	}
	return core.AuditHandshake
}
