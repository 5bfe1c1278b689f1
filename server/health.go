package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serveAlive is /alive and /health: the process answers.
func (s *Server) serveAlive(w http.ResponseWriter, _ *http.Request) {
	writeStatus(w, http.StatusOK, map[string]string{"status": "ok"})
}

// ReadyCheck is one component that /ready waits for.
type ReadyCheck struct {
	Component string // what /ready names when it is not ready: plugins, store, ...
	// Check returns nil when the component is ready, else why not.
	Check func(ctx context.Context) error
	// Status, when set, is what /ready shows for the component while
	// Check passes, instead of "ok": a plugin serving on fewer processes
	// than configured, say.
	Status func() string
}

// readyTimeout bounds one /ready answer's checks.
const readyTimeout = 3 * time.Second

// serveReady is /ready: 200 when every Options.Ready check passes, 503
// while shutting down and while any check fails. A 503 names each
// component that is not ready and why:
//
//	{"status":"not_ready","detail":"store: ...","components":{"store":"...","plugins":"ok"}}
//
// A ready component whose ReadyCheck has a Status shows it instead of ok:
//
//	{"status":"ready","components":{"plugins":"ok; query: 1 of 2 processes serving (process 0 restarting)"}}
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.closing.Load() {
		writeStatus(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	components := make(map[string]string, len(s.ready))
	var failed []string
	for _, c := range s.ready {
		if err := c.Check(ctx); err != nil {
			components[c.Component] = err.Error()
			failed = append(failed, c.Component+": "+err.Error())
			continue
		}
		components[c.Component] = "ok"
		if c.Status != nil {
			components[c.Component] = c.Status()
		}
	}
	if len(failed) > 0 {
		writeStatus(w, http.StatusServiceUnavailable, map[string]any{"status": "not_ready", "detail": strings.Join(failed, "; "), "components": components})
		return
	}
	writeStatus(w, http.StatusOK, map[string]any{"status": "ready", "components": components})
}

// serverInfo is the /server_info answer. uptime and idle_time are seconds,
// as upstream reports them.
type serverInfo struct {
	Title      string  `json:"title"`
	Version    string  `json:"version"`
	Uptime     float64 `json:"uptime"`
	IdleTime   float64 `json:"idle_time"`
	WebSockets int     `json:"websockets"`
	StartedAt  string  `json:"started_at"`
}

// serveInfo is /server_info.
func (s *Server) serveInfo(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	writeStatus(w, http.StatusOK, serverInfo{
		Title:      "agent-server",
		Version:    s.version,
		Uptime:     now.Sub(s.started).Seconds(),
		IdleTime:   now.Sub(time.Unix(0, s.lastActive.Load())).Seconds(),
		WebSockets: s.sockets.len(),
		StartedAt:  s.started.UTC().Format(time.RFC3339),
	})
}

// refuse answers a request the edge turns down with {"detail": ...}.
func refuse(w http.ResponseWriter, status int, detail string) {
	writeStatus(w, status, map[string]string{"detail": detail})
}

// writeStatus writes v as an uncacheable JSON answer.
func writeStatus(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil { // only the edge's own types reach here; they marshal
		data, status = []byte(`{"detail":"Internal server error"}`), http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}
