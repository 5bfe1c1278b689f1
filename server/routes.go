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
	return s.realClient(s.observe(closeUnswitched(mux)))
}

// closeUnswitched makes a request that asks to switch protocols end its
// connection unless it is switched: every answer but a 101 carries
// Connection: close, through net/http and on the direct path alike. A
// proxy that takes a forwarded Upgrade for the start of a tunnel whatever
// the answer (some have) would otherwise carry the client's next requests
// on that connection straight here, past the proxy's own rules and
// without the X-Forwarded-For it adds: WebSocket smuggling. A 101 is
// written by the upgrade, which takes the connection over, and does not
// carry it.
func closeUnswitched(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Header["Upgrade"]; ok {
			w.Header()["Connection"] = connectionClose
		}
		next.ServeHTTP(w, r)
	})
}

// connectionClose is the Connection header of an unswitched upgrade's
// answer, shared: nothing modifies a header's values in place.
var connectionClose = []string{"close"}
