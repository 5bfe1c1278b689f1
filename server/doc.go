// Package server is agent-server's HTTP and WebSocket edge. It is thin: it
// checks and authenticates requests, upgrades sockets with gws, moves bytes,
// and leaves every decision about conversations to package actors.
//
// Routes:
//
//	GET /sockets/events/{conversation_id}   the events WebSocket (handshake.go)
//	GET /sockets/runtime/{conversation_id}  agent runtimes' WebSocket (runtime.go)
//	/api/...                                the REST API (rest*.go, mounted by routes.go;
//	                                        the control endpoints in rest_control.go)
//	GET /alive, /health, /ready, /server_info, without authentication (health.go)
//
// A WebSocket handshake is refused before the upgrade, with a status and a
// JSON detail, for a malformed ID (400), a foreign Origin (403), failed
// authentication (401, or 101 then close 4001 under auth.reject_with:
// close), an undecided one (503 with Retry-After) and a principal whose
// scopes exclude the conversation (403). A handshake on which every
// authenticator abstains is upgraded instead when the events chain lists
// first_message: the connection actor then authenticates by the first frame
// (4001 on failure or after auth.first_message_timeout). A client offering
// the agent-server.v1 subprotocol gets it echoed, and never another value.
//
// Abuse limits (abuse.go), per remote IP: after auth.failures_per_minute
// failed authentications (401s, failed first messages) the events and REST
// routes answer 429 with Retry-After before any authenticator runs, and at
// most auth.unauthenticated_per_address first-message sockets may wait at
// once (429 beyond).
//
// Each upgraded socket implements actors.Transport with a bounded outbound
// queue (outbound.go). Frames are framed once on arrival and everything
// pending is written with one writev on the TCP connection by a flush
// goroutine that exists only while there is something to write. Close,
// ping and pong frames take the same path, so nothing is ever written in the
// middle of a batch. Past limits.send_queue_bytes the socket closes with 4008.
// The upgrade's 101 is held back and goes out in the same writev as the
// socket's first frame (preface.go); gws reads the socket straight from the
// connection (TCP, or TLS), not through that wrapper.
//
// On a plain listener, upgrade requests do not go through net/http's
// connection machinery: the listener (direct.go) reads each connection's
// first request head and serves an upgrade with the same handler on a
// pooled goroutine; every other connection goes to net/http with the
// bytes read put back. Listen (listen.go) sets TCP keep-alive once, on the
// listening socket, for accepted connections to inherit.
//
// The access log (accesslog.go) writes one line per request and handshake
// and never a secret: secret query values become ***, headers are not logged.
// Every request gets an ID (X-Request-Id), which its access line and its
// audit record carry.
//
// Observability: metrics.go holds the edge's collectors (HTTP requests,
// refused upgrades, 429s, open sockets, closes, frames, bytes, slow
// consumers, queue depth); audit.go records each decision the edge acts on
// (through actors.System.RecordAuth); trace.go spans each handshake and,
// with otelhttp, each REST request; admin.go is the admin listener's
// handler (metrics, health, profiles and execution traces from pprof.go); operations.go samples
// the figures of GET /api/operations, which the console's operations page
// draws.
package server
