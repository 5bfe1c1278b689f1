package server

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// serveAlive is /alive and /health: the process answers.
func (s *Server) serveAlive(w http.ResponseWriter, _ *http.Request) {
	writeStatus(w, http.StatusOK, map[string]string{"status": "ok"})
}

// serveReady is /ready: 200 once Options.Ready reports nil (every plugin of
// every chain is up), 503 before that and while shutting down.
func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	if s.closing.Load() {
		writeStatus(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down"})
		return
	}
	if s.ready != nil {
		if err := s.ready(); err != nil {
			writeStatus(w, http.StatusServiceUnavailable, map[string]string{"status": "starting", "detail": err.Error()})
			return
		}
	}
	writeStatus(w, http.StatusOK, map[string]string{"status": "ready"})
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
