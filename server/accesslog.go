package server

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
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

// logAccess writes one line per request and per WebSocket handshake:
// method, path, query with secret values replaced by ***, status, duration
// and remote address. Headers are never logged, so Authorization and
// X-Session-API-Key cannot leak through it.
func (s *Server) logAccess(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.touch()
		if s.access == nil {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		s.access.LogAttrs(r.Context(), slog.LevelInfo, "http request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.EscapedPath()),
			slog.String("query", redactQuery(r.URL.RawQuery)),
			slog.Int("status", rec.code()),
			slog.Duration("duration", time.Since(start)),
			slog.String("remote", r.RemoteAddr),
		)
	})
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
