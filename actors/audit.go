package actors

import (
	"context"
	"time"

	"github.com/agent-server/agent-server/core"
)

// This file is where authentication decisions are recorded, once each: the
// decision counter (metrics.go) and the audit log (Options.Audit). The edge
// records what it decides (handshakes, REST requests) through RecordAuth;
// the actors record first messages, revocations and expiries.

// RecordAuth counts one authentication decision and writes its audit
// record. The edge calls it once per decision it acts on.
func (s *System) RecordAuth(rec *core.AuditRecord) {
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	if rec.Plugin == "" {
		rec.Plugin = core.PluginNone
	}
	s.metrics.decided(rec)
	if s.audit != nil {
		s.audit.Audit(rec)
	}
}

// auditFirstMessage records the decision on a socket's first frame, as
// connection.authenticated acts on it: an error, a deny (or an expired
// principal), a principal limited to other conversations, or an allow.
func (s *System) auditFirstMessage(base *core.AuditRecord, req *core.Request, res core.Result, convID string) {
	rec := core.NewAuditRecord(core.AuditFirstMessage, req, res)
	rec.RequestID = baseRecord(base).RequestID
	switch {
	case res.Decision == core.Allow && res.Principal != nil && res.Principal.Expired(time.Now()):
		rec.Decision, rec.ReasonClass, rec.Reason, rec.Subject = core.DecisionDeny, core.ClassExpired, core.ReasonExpired, ""
	case res.Decision == core.Allow && res.Principal != nil && !res.Principal.CanAccess(convID):
		rec.Decision, rec.ReasonClass, rec.Reason = core.DecisionDeny, core.ClassForbiddenScope, "the credential may not open this conversation"
	}
	s.RecordAuth(&rec)
}

// auditFirstMessageTimeout records a socket closed because its first
// message did not come in time.
func (s *System) auditFirstMessageTimeout(base *core.AuditRecord) {
	s.metrics.firstMessageTimedOut()
	rec := baseRecord(base)
	rec.Event, rec.Decision, rec.ReasonClass = core.AuditFirstMessage, core.DecisionDeny, core.ClassNoCredentials
	rec.Reason = "no first message within auth.first_message_timeout"
	s.RecordAuth(&rec)
}

// auditExpiry records a socket closed because its principal expired.
func (s *System) auditExpiry(base *core.AuditRecord, p *core.Principal) {
	rec := baseRecord(base)
	rec.Event, rec.Decision, rec.ReasonClass, rec.Reason = core.AuditExpiry, core.DecisionDeny, core.ClassExpired, core.ReasonExpired
	if p != nil {
		rec.Plugin, rec.Subject = p.Authenticator, core.AuditSubject(p)
	}
	s.RecordAuth(&rec)
}

// auditRevoked records a socket closed by revalidation, with the result
// that refused its credential.
func (s *System) auditRevoked(base *core.AuditRecord, res core.Result) {
	rec := baseRecord(base)
	rec.Event, rec.Decision, rec.ReasonClass = core.AuditRevalidation, core.DecisionDeny, core.ClassRevoked
	rec.Plugin, rec.Reason = res.Authenticator, res.Reason
	if res.Decision == core.Allow {
		rec.Reason = "the credential no longer opens this socket (expired, scopes or role)"
	}
	s.RecordAuth(&rec)
}

// baseRecord is a copy of a socket's base record, a zero one for nil.
func baseRecord(base *core.AuditRecord) core.AuditRecord {
	if base == nil {
		return core.AuditRecord{}
	}
	return *base
}

// ConversationCounts returns how many conversation actors run and how many
// known conversations are passivated, for the operations view.
func (s *System) ConversationCounts(ctx context.Context) (running, passivated int, err error) {
	known, running, err := s.countConversations(ctx)
	return running, known - running, err
}
