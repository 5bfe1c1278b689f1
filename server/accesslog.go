package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// redacted replaces a secret's value in the access log.
const redacted = "***"

// secretParams are query parameters whose values never reach a log.
var secretParams = map[string]bool{
	"session_api_key": true,
	"api_key":         true,
	"apikey":          true,
	"key":             true,
	"token":           true,
	"access_token":    true,
	"password":        true,
	"secret":          true,
}

// requestInfo is what the edge learns about one request while serving it,
// for the access log, the metrics and the audit log. observe puts it in the
// request's context; handlers fill in what only they know.
type requestInfo struct {
	id      string            // the request ID: X-Request-Id, access log, audit log
	pattern string            // the route pattern that served it, when an inner mux chose it
	span    trace.SpanContext // the request's span, when traced
}

type requestInfoKey struct{}

// infoOf returns r's requestInfo; a request that did not pass observe (a
// test calling a handler directly) gets a fresh one.
func infoOf(ctx context.Context) *requestInfo {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return info
	}
	return &requestInfo{}
}

// newRequestID returns 16 hex digits, random enough to tell requests apart.
func newRequestID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// observe gives each request an ID, returned in X-Request-Id (a socket's
// 101 is written by gws and carries none), counts it by route pattern,
// method and status (upgraded sockets excepted), and writes one access-log
// line per request and per WebSocket handshake: request ID, method, path,
// query with secret values replaced by ***, status, duration and remote
// address. Headers are never logged, so Authorization and
// X-Session-API-Key cannot leak through it. The line carries the request's
// trace ID when it was traced.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.touch()
		info := &requestInfo{id: newRequestID()}
		w.Header().Set("X-Request-Id", info.id)
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		took := time.Since(start)
		code := rec.code()
		if code != http.StatusSwitchingProtocols {
			pattern := info.pattern
			if pattern == "" {
				pattern = r.Pattern
			}
			if pattern == "" {
				pattern = "unmatched"
			}
			s.metrics.request(pattern, r.Method, code, took)
		}
		if s.access == nil {
			return
		}
		ctx := r.Context()
		if info.span.IsValid() {
			ctx = trace.ContextWithSpanContext(ctx, info.span)
		}
		s.accessLine(ctx, info.id, r, code, took)
	})
}

// accessLine writes one access-log line. It hands the record to the
// handler itself, as slog.Logger.LogAttrs would but without looking up the
// caller's frame, which no access-log line shows and which cost a stack
// walk per request.
func (s *Server) accessLine(ctx context.Context, id string, r *http.Request, code int, took time.Duration) {
	h := s.access.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	rec := slog.NewRecord(time.Now(), slog.LevelInfo, "http request", 0)
	rec.AddAttrs(
		slog.String("request_id", id),
		slog.String("method", r.Method),
		slog.String("path", r.URL.EscapedPath()),
		slog.String("query", redactQuery(r.URL.RawQuery)),
		slog.Int("status", code),
		slog.Duration("duration", took),
		slog.String("remote", r.RemoteAddr),
	)
	_ = h.Handle(ctx, rec) // as LogAttrs: a handler's error is not the request's
}

// redactQuery returns raw with the value of every secret parameter replaced
// by ***, whatever its spelling (percent-encoded, any case); everything
// else is kept as sent.
func redactQuery(raw string) string {
	if raw == "" {
		return ""
	}
	pairs := strings.FieldsFunc(raw, func(r rune) bool { return r == '&' || r == ';' })
	for i, pair := range pairs {
		k, _, hasValue := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if secretParams[strings.ToLower(strings.TrimSpace(name))] && hasValue {
			pairs[i] = k + "=" + redacted
		}
	}
	return strings.Join(pairs, "&")
}

// statusRecorder remembers the status written through it. It passes
// Hijack through, which the WebSocket upgrade needs, and records it as 101.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

// WriteHeader records status.
func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

// Write records an implicit 200.
func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// Flush passes through to the underlying writer when it can flush.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection over and records 101 Switching Protocols.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer cannot hijack")
	}
	conn, rw, err := h.Hijack()
	if err == nil {
		r.status = http.StatusSwitchingProtocols
	}
	return conn, rw, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}
