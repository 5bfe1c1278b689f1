package server

import (
	"net/http"

	"github.com/agent-server/agent-server/server/console"
)

// routes wires every endpoint. /api/ comes from newREST (rest.go); this
// call is the only coupling between the edge and the REST handlers.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sockets/events/{conversation_id}", s.serveEvents)
	mux.HandleFunc("GET /sockets/runtime/{conversation_id}", s.serveRuntime)
	mux.HandleFunc("GET /alive", s.serveAlive)
	mux.HandleFunc("GET /health", s.serveAlive)
	mux.HandleFunc("GET /ready", s.serveReady)
	mux.HandleFunc("GET /server_info", s.serveInfo)
	page := console.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET "+console.OperationsPath, page)
	mux.Handle("GET "+console.Prefix, page)
	s.abuse = newAddrLimits(s.cfg.Auth)
	mux.Handle("/api/", s.traceREST(s.tracing, s.limitFailures(newREST(s))))
	return s.realClient(s.observe(mux))
}
