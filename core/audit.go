package core

import (
	"context"
	"errors"
	"strings"
	"time"
)

// AuditRecord is one line of the audit log: one authentication decision, or
// one socket closed because its credential was revoked or expired.
// Operators feed it to their SIEM, so the JSON field names are a contract:
// they are never renamed or reused for something else, only added to.
// No field ever holds a credential or a hash of one.
type AuditRecord struct {
	// Time is when the decision was made, UTC, RFC 3339 with nanoseconds.
	Time time.Time `json:"time"`
	// Event says what was decided: one of the Audit* event constants
	// (handshake, request, first_message, revalidation, expiry).
	Event string `json:"event"`
	// Route is the authenticator chain's route: events, rest or runtime.
	Route Route `json:"route"`
	// RemoteAddr is the client's address, host:port (the client a trusted
	// proxy names, under server.trusted_proxies).
	RemoteAddr string `json:"remote_addr"`
	// Conversation is the conversation ID the request names (a socket's,
	// or a REST path's {conversation_id}); empty when it names none.
	Conversation string `json:"conversation,omitempty"`
	// Plugin is the authenticator that decided, or "none" when none did
	// (every plugin abstained, or the request was refused before any ran).
	Plugin string `json:"plugin"`
	// Decision is allow, deny or error.
	Decision string `json:"decision"`
	// ReasonClass is the reason from the small fixed set of the Class*
	// constants; the same value labels agent_server_auth_decisions_total.
	ReasonClass string `json:"reason_class"`
	// Reason is the free text behind the decision: a plugin's deny reason
	// or the error, as the plugin or the server wrote it. It never holds a
	// credential (plugins are told never to put one there).
	Reason string `json:"reason,omitempty"`
	// Subject is who was allowed (Principal.Subject), empty otherwise. A
	// session API key's subject is "api_key" (and "runtime_key" for an agent
	// runtime's key): a key's fingerprint is a hash of it and is never
	// written here.
	Subject string `json:"subject,omitempty"`
	// Cached is true when the plugin host's decision cache answered,
	// without a call to the plugin.
	Cached bool `json:"cached"`
	// RequestID is the ID the server gave the HTTP request (the
	// X-Request-Id response header, also in the access log); a socket's
	// later records (first_message, revalidation, expiry) carry its
	// handshake's.
	RequestID string `json:"request_id"`
}

// The AuditRecord.Event values.
const (
	AuditHandshake    = "handshake"     // a WebSocket handshake's credential
	AuditRequest      = "request"       // a REST request's credential
	AuditFirstMessage = "first_message" // a socket's first frame, or its absence in time
	AuditRevalidation = "revalidation"  // an open socket closed: its credential was revoked (4001)
	AuditExpiry       = "expiry"        // an open socket closed: its credential expired (4001)
)

// The decisions as AuditRecord.Decision and metric labels write them.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
	DecisionError = "error"
)

// PluginNone is AuditRecord.Plugin, and the plugin label, when no
// authenticator decided.
const PluginNone = "none"

// The reason classes: every decision falls in exactly one.
const (
	ClassNone           = "none"            // allowed
	ClassNoCredentials  = "no_credentials"  // no credential at all: every plugin abstained, or no first message in time
	ClassInvalid        = "invalid"         // a credential was present and refused
	ClassExpired        = "expired"         // the credential has expired (or expired on an open socket)
	ClassRevoked        = "revoked"         // an open socket's credential is no longer accepted after a reload
	ClassForbiddenScope = "forbidden_scope" // a valid credential limited to other conversations (403)
	ClassForbiddenRole  = "forbidden_role"  // a valid credential without the role the route needs (403)
	ClassPluginError    = "plugin_error"    // the plugin failed, crashed or is down: fail closed (503)
	ClassTimeout        = "timeout"         // the plugin did not answer within auth.rpc_timeout (503)
	ClassOverloaded     = "overloaded"      // every plugin call slot was busy past auth.queue (503)
	ClassRateLimited    = "rate_limited"    // refused with 429 before any plugin ran
)

// ReasonClasses lists every reason class, for documentation and tests.
var ReasonClasses = []string{ClassNone, ClassNoCredentials, ClassInvalid, ClassExpired, ClassRevoked,
	ClassForbiddenScope, ClassForbiddenRole, ClassPluginError, ClassTimeout, ClassOverloaded, ClassRateLimited}

// ReasonExpired is the Deny reason for a credential past its expiry.
const ReasonExpired = "credential expired"

// Classify returns the decision and the reason class of a chain's result as
// the edge acted on it. A plugin's deny reason is free text: one that says
// "expired" is classed expired, every other deny invalid.
func Classify(res Result) (decision, class string) {
	switch res.Decision {
	case Allow:
		return DecisionAllow, ClassNone
	case Error:
		if errors.Is(res.Err, ErrOverloaded) {
			return DecisionError, ClassOverloaded
		}
		if errors.Is(res.Err, context.DeadlineExceeded) {
			return DecisionError, ClassTimeout
		}
		return DecisionError, ClassPluginError
	}
	switch {
	case res.Authenticator == "" && res.Reason == ReasonNoCredentials:
		return DecisionDeny, ClassNoCredentials
	case strings.Contains(strings.ToLower(res.Reason), "expired"):
		return DecisionDeny, ClassExpired
	}
	return DecisionDeny, ClassInvalid
}

// AuditSubject is the Subject an audit record gives p: its subject, except
// that a session API key's fingerprint (a hash of the key) becomes
// "api_key", or "runtime_key" for an agent runtime's key.
func AuditSubject(p *Principal) string {
	if p == nil {
		return ""
	}
	if strings.HasPrefix(p.Subject, keyFingerprintPrefix) {
		if p.HasRole(RoleRuntime) {
			return "runtime_key"
		}
		return "api_key"
	}
	return p.Subject
}

// AuditSink receives audit records. Implementations must be safe for
// concurrent use and must not block for long: they run on the request path.
type AuditSink interface {
	Audit(rec *AuditRecord)
}

// NewAuditRecord returns the record of event for a chain's result on req:
// route, remote address, the conversation when the request names a valid
// one, the deciding plugin, decision, reason class and reason, the subject
// of an allow, and whether the cache answered. The caller sets RequestID,
// and overrides the decision when it refuses an allowed principal.
func NewAuditRecord(event string, req *Request, res Result) AuditRecord {
	decision, class := Classify(res)
	rec := AuditRecord{
		Time:        time.Now().UTC(),
		Event:       event,
		Route:       req.Route,
		RemoteAddr:  req.RemoteAddr,
		Plugin:      res.Authenticator,
		Decision:    decision,
		ReasonClass: class,
		Reason:      res.Reason,
		Cached:      res.Cached,
	}
	if id, err := NormalizeID(req.PathParams["conversation_id"]); err == nil {
		rec.Conversation = id
	}
	if rec.Plugin == "" {
		rec.Plugin = PluginNone
	}
	switch res.Decision {
	case Allow:
		rec.Subject = AuditSubject(res.Principal)
	case Error:
		if res.Err != nil {
			rec.Reason = res.Err.Error()
		}
	}
	return rec
}
