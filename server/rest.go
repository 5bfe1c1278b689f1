package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
)

// restBackend is what the REST API needs from the actor system. Writes go
// through it so that each conversation's actor stays the only writer of its
// log; reads go straight to the core.Store.
type restBackend interface {
	// Authenticate runs the route's authenticator chain.
	Authenticate(ctx context.Context, req *core.Request) core.Result
	// CreateConversation creates c unless its ID exists, and returns the
	// stored conversation and whether it was created.
	CreateConversation(ctx context.Context, c *core.Conversation) (*core.Conversation, bool, error)
	// PostEvent appends an event to the conversation and broadcasts it; an
	// unknown conversation is core.ErrNotFound.
	PostEvent(ctx context.Context, conversationID string, source core.Source, kind string, body json.RawMessage) (*core.Event, error)
	// DeleteConversation closes the conversation's sockets with 4004 and
	// removes it; an unknown conversation is core.ErrNotFound.
	DeleteConversation(ctx context.Context, id string) error
	// The control endpoints' commands (rest_control.go).
	controlBackend
	// Topology is what this node sees of the cluster; ok is false on a
	// single node.
	Topology() (t actors.Topology, ok bool)
}

// Path wildcards of the REST routes, also handed to authenticators as
// core.Request.PathParams.
const (
	paramConversation = "conversation_id"
	paramEvent        = "event_id"
)

// restRetryAfter is the Retry-After, in seconds, sent with a 503 when the
// authenticator chain could not decide.
const restRetryAfter = "1"

// maxBatchIDs bounds GET /api/conversations?ids=...
const maxBatchIDs = 100

// defaultMaxBody is the body limit when the configured one is not positive.
const defaultMaxBody = 1 << 20

// restAPI serves /api. Every route authenticates first (chain "rest"), then
// checks the principal's scopes, then runs its handler.
type restAPI struct {
	backend restBackend
	store   core.Store
	maxBody int64
	log     *slog.Logger
	now     func() time.Time
	mux     *http.ServeMux
	// record counts and audits each authentication decision; nil records
	// nothing (the handler tests).
	record func(r *http.Request, rec core.AuditRecord)
}

// restCall is what authorize learned about one request.
type restCall struct {
	principal *core.Principal
	convID    string // the normalized {conversation_id}, "" on routes without one
	query     map[string][]string
}

// restFunc is one endpoint. It writes a success response itself and returns
// an error for anything else; fail turns the error into {"detail": ...}.
type restFunc func(w http.ResponseWriter, r *http.Request, c *restCall) error

// newRESTHandler returns the /api handler. Requests keep their full path:
// mount it at "/api/" without stripping the prefix. maxBody bounds request
// bodies (413 above it); log receives failures, never a credential.
func newRESTHandler(b restBackend, st core.Store, maxBody int64, log *slog.Logger) *restAPI {
	if maxBody <= 0 {
		maxBody = defaultMaxBody
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &restAPI{backend: b, store: st, maxBody: maxBody, log: log, now: time.Now, mux: http.NewServeMux()}

	a.handle("POST /api/conversations", a.createConversation)
	a.handle("POST /api/conversations/{$}", a.createConversation)
	a.handle("GET /api/conversations", a.batchConversations)
	a.handle("GET /api/conversations/{$}", a.batchConversations)
	a.handle("GET /api/conversations/search", a.searchConversations)
	a.handle("GET /api/conversations/count", a.countConversations)
	a.handle("GET /api/conversations/{conversation_id}", a.getConversation)
	a.handle("DELETE /api/conversations/{conversation_id}", a.deleteConversation)
	a.handle("GET /api/conversations/{conversation_id}/events/search", a.searchEvents)
	a.handle("GET /api/conversations/{conversation_id}/events/count", a.countEvents)
	a.handle("GET /api/conversations/{conversation_id}/events/{event_id}", a.getEvent)
	a.handle("POST /api/conversations/{conversation_id}/events", a.postEvent)
	a.mountControl()
	a.handle("GET /api/cluster", a.clusterTopology)
	a.handle("/api/", a.unknownRoute)
	return a
}

// ServeHTTP dispatches to the route.
func (a *restAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *restAPI) handle(pattern string, fn restFunc) { a.handleScoped(pattern, fn, false) }

// handleUnscoped is handle for a route only an unscoped principal (one not
// limited to some conversations) may call: any other gets 403.
func (a *restAPI) handleUnscoped(pattern string, fn restFunc) { a.handleScoped(pattern, fn, true) }

func (a *restAPI) handleScoped(pattern string, fn restFunc, unscoped bool) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		infoOf(r.Context()).pattern = pattern
		call, err := a.authorize(r, unscoped)
		if err == nil {
			err = fn(w, r, call)
		}
		if err != nil {
			a.fail(w, r, err)
		}
	})
}

// authorize authenticates r with the backend and checks the principal's
// scopes against the path's conversation, or, with unscoped, that it has
// none.
func (a *restAPI) authorize(r *http.Request, unscoped bool) (*restCall, error) {
	call := &restCall{query: core.ParseQuery(r.URL.RawQuery)}
	params := make(map[string]string, 2)
	var badID bool
	if raw := r.PathValue(paramConversation); raw != "" {
		id, err := core.NormalizeID(raw)
		if err != nil {
			badID = true
			params[paramConversation] = raw
		} else {
			call.convID = id
			params[paramConversation] = id
		}
	}
	if raw := r.PathValue(paramEvent); raw != "" {
		params[paramEvent] = raw
	}
	req := &core.Request{
		Route:      core.RouteREST,
		Method:     r.Method,
		Path:       r.URL.Path,
		PathParams: params,
		Query:      call.query,
		Header:     r.Header,
		RemoteAddr: r.RemoteAddr,
		Origin:     r.Header.Get("Origin"),

		ClientCertificates: clientCertificates(r),
	}
	res := a.backend.Authenticate(r.Context(), req)
	rec := core.NewAuditRecord(core.AuditRequest, req, res)
	deny := func(class, reason string) {
		rec.Decision, rec.ReasonClass, rec.Reason = core.DecisionDeny, class, reason
	}
	defer func() {
		if a.record != nil {
			a.record(r, rec)
		}
	}()
	switch res.Decision {
	case core.Allow:
	case core.Error:
		if res.RequestFault {
			chargeFailure(r.Context())
		}
		detail := "Authentication is temporarily unavailable"
		if errors.Is(res.Err, core.ErrOverloaded) {
			detail = detailOverloaded
		}
		return nil, &apiError{status: http.StatusServiceUnavailable, detail: detail, err: fmt.Errorf("authenticate: %w", res.Err)}
	default:
		a.log.DebugContext(r.Context(), "rest request denied", "route", r.Pattern, "authenticator", res.Authenticator, "reason", res.Reason)
		return nil, errUnauthorized
	}
	p := res.Principal
	if p == nil {
		rec.Decision, rec.ReasonClass = core.DecisionError, core.ClassPluginError
		return nil, &apiError{status: http.StatusServiceUnavailable, detail: "Authentication is temporarily unavailable",
			err: fmt.Errorf("authenticator %q allowed without a principal", res.Authenticator)}
	}
	if p.Expired(a.now()) {
		deny(core.ClassExpired, core.ReasonExpired)
		return nil, errUnauthorized
	}
	if badID {
		return nil, badRequest("conversation id is not a UUID")
	}
	if call.convID != "" && !p.CanAccess(call.convID) {
		deny(core.ClassForbiddenScope, "the credential may not open this conversation")
		return nil, &apiError{status: http.StatusForbidden, detail: "Forbidden"}
	}
	if unscoped && len(p.Scopes) > 0 {
		deny(core.ClassForbiddenScope, "the route needs a credential not limited to some conversations")
		return nil, &apiError{status: http.StatusForbidden, detail: "Forbidden: this needs a credential not limited to some conversations"}
	}
	call.principal = p
	return call, nil
}

// filterScopes returns the principal's scope check, or nil when it may see
// every conversation.
func (c *restCall) filterScopes() func(string) bool {
	if len(c.principal.Scopes) == 0 {
		return nil
	}
	return c.principal.CanAccess
}

// queryValue returns the first value of the query parameter name, or "".
func (c *restCall) queryValue(name string) string {
	if v := c.query[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// unknownRoute answers, after authentication, 405 for a known path with
// another method and 404 for everything else under /api.
func (a *restAPI) unknownRoute(w http.ResponseWriter, r *http.Request, _ *restCall) error {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		probe := *r
		probe.Method = m
		if _, pattern := a.mux.Handler(&probe); pattern != "" && pattern != "/api/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		return &apiError{status: http.StatusMethodNotAllowed, detail: "Method Not Allowed"}
	}
	return &apiError{status: http.StatusNotFound, detail: "Not Found"}
}

// apiError is an error answer: status and a detail safe to show the client.
// err is the cause, logged for 5xx answers and never sent.
type apiError struct {
	status int
	detail string
	err    error
}

// Error returns the detail and the cause.
func (e *apiError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%d %s: %v", e.status, e.detail, e.err)
	}
	return fmt.Sprintf("%d %s", e.status, e.detail)
}

// Unwrap returns the cause.
func (e *apiError) Unwrap() error { return e.err }

var errUnauthorized = &apiError{status: http.StatusUnauthorized, detail: "Unauthorized"}

func badRequest(detail string) *apiError {
	return &apiError{status: http.StatusBadRequest, detail: detail}
}

func notFound(detail string) *apiError {
	return &apiError{status: http.StatusNotFound, detail: detail}
}

// backendError maps an error from the store or the backend to an answer:
// core.ErrNotFound is 404 with notFoundDetail, a timeout or a shutdown 503,
// the rest 500.
func backendError(err error, notFoundDetail string) *apiError {
	var ae *apiError
	var tooLarge *core.EventTooLargeError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, core.ErrNotFound):
		return &apiError{status: http.StatusNotFound, detail: notFoundDetail, err: err}
	case errors.As(err, &tooLarge):
		return &apiError{status: http.StatusRequestEntityTooLarge, detail: "Event too large: " + tooLarge.Error(), err: err}
	case errors.Is(err, core.ErrKeyReused):
		return &apiError{status: http.StatusUnprocessableEntity, detail: "Idempotency-Key was used with another request in this conversation", err: err}
	case errors.Is(err, core.ErrUnavailable):
		return &apiError{status: http.StatusServiceUnavailable, detail: "Store unavailable; nothing was stored: retry later", err: err}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, actors.ErrShutdown):
		return &apiError{status: http.StatusServiceUnavailable, detail: "Service temporarily unavailable", err: err}
	}
	return &apiError{status: http.StatusInternalServerError, detail: "Internal server error", err: err}
}

// fail writes err as {"detail": ...}. Server-side failures are logged with
// the route pattern, never the query (it may hold session_api_key).
func (a *restAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		ae = &apiError{status: http.StatusRequestEntityTooLarge, detail: fmt.Sprintf("Request body is larger than %d bytes", tooBig.Limit)}
	case errors.As(err, &ae):
	default:
		ae = backendError(err, "Not found")
	}
	switch {
	case errors.Is(err, core.ErrOverloaded): // counted by the auth metrics; a line each would flood the log under overload
		a.log.DebugContext(r.Context(), "rest request refused: authentication overloaded", "method", r.Method, "route", r.Pattern)
	case ae.status >= 500:
		a.log.ErrorContext(r.Context(), "rest request failed", "method", r.Method, "route", r.Pattern, "status", ae.status, "err", err)
	}
	if ae.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", restRetryAfter)
	}
	writeJSON(w, ae.status, struct {
		Detail string `json:"detail"`
	}{ae.detail})
}

// readJSON reads the request body, at most a.maxBody bytes, into v.
func (a *restAPI) readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return badRequest("request body is required")
	}
	if err := json.Unmarshal(data, v); err != nil {
		return decodeError(err)
	}
	return nil
}

// readBody reads the request body, at most a.maxBody bytes, without the
// whitespace around it: empty when there is none.
func (a *restAPI) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > a.maxBody {
		return nil, &http.MaxBytesError{Limit: a.maxBody}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, badRequest("could not read the request body")
	}
	return bytes.TrimSpace(data), nil
}

// decodeError turns a JSON decoding error into a 400 that names the field.
func decodeError(err error) *apiError {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return badRequest(fmt.Sprintf("field %q has the wrong type", typeErr.Field))
	}
	if errors.As(err, &typeErr) {
		return badRequest("request body must be a JSON object")
	}
	return badRequest("request body is not valid JSON")
}

// setJSONHeaders marks a response as uncacheable JSON.
func setJSONHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}

// writeJSON writes v as the response body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil { // only our own types reach here; they always marshal
		data, status = []byte(`{"detail":"Internal server error"}`), http.StatusInternalServerError
	}
	setJSONHeaders(w)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// success is the {"success": true} answer of deletes and posts.
var success = struct {
	Success bool `json:"success"`
}{true}

var _ http.Handler = (*restAPI)(nil)

// clusterTopology is GET /api/cluster: this node, the members it sees and
// how many conversations it owns. The topology is not public: it needs an
// unscoped credential (a key, or a token not limited to some
// conversations), and is never on /server_info.
func (a *restAPI) clusterTopology(w http.ResponseWriter, r *http.Request, c *restCall) error {
	if len(c.principal.Scopes) > 0 {
		return &apiError{status: http.StatusForbidden, detail: "Forbidden: the cluster's topology needs a credential not limited to some conversations"}
	}
	t, ok := a.backend.Topology()
	if !ok {
		return notFound("Not in cluster mode")
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}
