package server

import "net/http"

// newREST builds the /api handler for routes.go.
//
// Temporary: written by the edge so the package compiles before the REST
// side defines newREST. Files named server/rest*.go belong to the REST
// engineer, who may replace or delete this one.
func newREST(s *Server) http.Handler {
	return newRESTHandler(s.actors, s.store, s.cfg.Limits.MaxBodyBytes, s.log)
}
