package core

import (
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Route names a group of endpoints that share one authenticator chain.
type Route string

// The routes the server authenticates.
const (
	RouteEvents  Route = "events"  // the /sockets/events WebSocket
	RouteREST    Route = "rest"    // the /api REST endpoints
	RouteRuntime Route = "runtime" // the /sockets/runtime WebSocket of agent runtimes
)

// RoleRuntime is the role of a principal that may act as an agent runtime:
// attach to /sockets/runtime and publish agent and environment events.
// Authenticators set it (the built-in key plugins for auth.runtime_keys);
// a principal without it is a client.
const RoleRuntime = "runtime"

// Subprotocol is the WebSocket subprotocol of this server's protocol. When a
// client offers it the server echoes it, and never any other offered value.
const Subprotocol = "agent-server.v1"

// FirstMessageAuthenticator is the name of the authenticator that reads a
// WebSocket's first frame. When a route's chain lists it and every other
// authenticator abstains on the handshake, the edge upgrades and the
// connection authenticates by its first frame.
const FirstMessageAuthenticator = "first_message"

// Request is everything an authenticator may read about an incoming request.
// It is built once by the edge, before any WebSocket upgrade.
type Request struct {
	Route        Route
	Method       string
	Path         string
	PathParams   map[string]string
	Query        map[string][]string // decoded with ParseQuery: '+' stays '+'
	Header       http.Header         // canonical header keys, as net/http gives them
	RemoteAddr   string
	Subprotocols []string // offered Sec-WebSocket-Protocol values, in order
	Origin       string
	FirstMessage []byte // the first frame, for authenticators that read it after the upgrade
	// ClientCertificates is the client certificate chain the TLS handshake
	// verified against server.tls.client_ca_file, leaf first; nil without
	// TLS, without a certificate, or when none was verified. A certificate
	// that failed verification ended the handshake and never appears here.
	ClientCertificates []*x509.Certificate
}

// QueryValue returns the first value of the query parameter name, or "".
func (r *Request) QueryValue(name string) string {
	if v := r.Query[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// ParseQuery decodes a raw query string like url.ParseQuery, except that a
// '+' is kept as a literal plus instead of becoming a space. API keys are not
// form data: a key "a+b" sent unencoded must arrive as "a+b", just as "a%2Bb"
// does. Malformed pairs are skipped.
func ParseQuery(raw string) map[string][]string {
	out := make(map[string][]string)
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err := url.PathUnescape(k)
		if err != nil {
			continue
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			continue
		}
		out[key] = append(out[key], val)
	}
	return out
}

// Principal is an authenticated identity.
type Principal struct {
	Subject       string            // who: a key fingerprint, a JWT sub, ...
	Authenticator string            // the name of the authenticator that allowed it
	Scopes        []string          // conversation IDs it may open; empty means all
	Claims        map[string]string // optional extra claims
	Expiry        time.Time         // zero means no expiry
	Roles         []string          // e.g. RoleRuntime; empty means a plain client
}

// HasRole reports whether the principal carries role.
func (p *Principal) HasRole(role string) bool {
	for _, r := range p.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// CanAccess reports whether the principal may open the conversation id.
func (p *Principal) CanAccess(conversationID string) bool {
	if len(p.Scopes) == 0 {
		return true
	}
	for _, s := range p.Scopes {
		if strings.EqualFold(s, conversationID) {
			return true
		}
	}
	return false
}

// Expired reports whether the principal's expiry has passed at now.
func (p *Principal) Expired(now time.Time) bool {
	return !p.Expiry.IsZero() && !now.Before(p.Expiry)
}

// Decision is the outcome kind of one authenticator or of a whole chain.
type Decision int

// The four outcomes. Abstain only ever comes from a single authenticator: a
// chain turns "everyone abstained" into Deny.
const (
	Abstain Decision = iota // no credential of this authenticator's kind is present
	Allow                   // a credential is present and valid
	Deny                    // a credential is present and invalid
	Error                   // the check itself failed: crash, timeout, RPC failure
)

// String returns the decision's lower-case name.
func (d Decision) String() string {
	switch d {
	case Abstain:
		return "abstain"
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case Error:
		return "error"
	}
	return "unknown"
}

// Result is what an authenticator or a chain answers.
type Result struct {
	Decision      Decision
	Principal     *Principal // set only with Allow
	Reason        string     // why, for Deny; never contains a credential
	Err           error      // set only with Error
	Authenticator string     // the name of the authenticator that decided
	// RequestFault marks an Error the request itself caused, such as a
	// token naming a signing key its issuer does not publish: the edge
	// still fails closed (503) but counts it toward
	// auth.failures_per_minute like a refused credential, so a flood of
	// such requests is throttled too.
	RequestFault bool
	// MaxAge bounds how long a cache may reuse this decision: positive is
	// at most that long (the cache's own TTL still applies), negative is
	// never, zero is the cache's own TTL.
	MaxAge time.Duration
	// Cached is set by a host that answered from its decision cache,
	// without asking the authenticator; the audit log records it.
	Cached bool
}

// Allowed returns an Allow result for p.
func Allowed(p *Principal) Result { return Result{Decision: Allow, Principal: p} }

// Denied returns a Deny result with a reason that must not contain a secret.
func Denied(reason string) Result { return Result{Decision: Deny, Reason: reason} }

// Abstained returns an Abstain result.
func Abstained() Result { return Result{Decision: Abstain} }

// ErrOverloaded is wrapped by the Error of an authentication refused
// because the authenticators are saturated: every plugin call slot was busy
// and the bounded queue was full, or no slot came free within its wait.
// The edge answers it 503 with Retry-After, like any Error.
var ErrOverloaded = errors.New("authentication is overloaded")

// Failed returns an Error result wrapping err.
func Failed(err error) Result { return Result{Decision: Error, Err: err} }

// FailedByRequest returns an Error result wrapping err that the request
// itself caused (see Result.RequestFault).
func FailedByRequest(err error) Result { return Result{Decision: Error, Err: err, RequestFault: true} }
