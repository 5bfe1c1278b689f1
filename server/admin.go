package server

import (
	"net/http"
)

// AdminHandler is the admin listener's handler (admin.addr): metrics at
// /metrics when metrics is not nil (404 otherwise), the profiles under
// /debug/pprof/ when pprof is set (admin.pprof), and /alive, /health and
// /ready, answered as on the public listener. Nothing on it is
// authenticated: keep admin.addr on loopback or a private network.
func (s *Server) AdminHandler(metrics http.Handler, pprof bool) http.Handler {
	mux := http.NewServeMux()
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	if pprof {
		handlePprof(mux)
	}
	mux.HandleFunc("GET /alive", s.serveAlive)
	mux.HandleFunc("GET /health", s.serveAlive)
	mux.HandleFunc("GET /ready", s.serveReady)
	return mux
}
