package server

import (
	"net/http"

	"github.com/agent-server/agent-server/actors"
)

// newREST builds the handler routes.go mounts at "/api/": the REST API over
// the server's actor system (writes) and store (reads).
func newREST(s *Server) http.Handler {
	h := newRESTHandler(s.actors, s.store, s.cfg.Limits.MaxBodyBytes, s.log)
	h.record = s.recordAuth
	h.handleUnscoped("GET /api/operations", s.ops.serve)
	return h
}

// The actor system is the REST backend in production; the tests use a fake.
var _ restBackend = (*actors.System)(nil)
