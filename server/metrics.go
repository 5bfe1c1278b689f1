package server

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-server/agent-server/core"
)

// serverMetrics are the edge's collectors: HTTP requests, refused
// upgrades, 429 refusals, and each socket route's open sockets, closes,
// durations, frames, bytes, slow consumers and queue depth. Every method
// is safe on a nil *serverMetrics, which measures nothing. Label values
// come from small fixed sets: route patterns, known methods (else other),
// known close codes (else other), the refusal reasons below.
type serverMetrics struct {
	requests        *prometheus.CounterVec   // handler, method, code
	requestDuration *prometheus.HistogramVec // handler
	refusals        *prometheus.CounterVec   // route, reason
	rateLimits      *prometheus.CounterVec   // route, reason
	routes          map[core.Route]*routeMetrics
}

// routeMetrics are one socket route's children, looked up once.
type routeMetrics struct {
	authenticating, open prometheus.Gauge
	closes               *prometheus.CounterVec // code
	duration             prometheus.Observer
	framesIn, framesOut  prometheus.Counter
	bytesIn, bytesOut    prometheus.Counter
	slow                 prometheus.Counter
	queue                prometheus.Observer
}

// Why a socket handshake was refused before the upgrade (the reason label).
const (
	refusedBadID          = "bad_id"                  // 400: the conversation ID is not a UUID
	refusedNotWebSocket   = "not_websocket"           // 400: not an upgrade request
	refusedOrigin         = "origin"                  // 403: a foreign Origin
	refusedBadQuery       = "bad_query"               // 400: a malformed replay query
	refusedRateLimited    = "rate_limited"            // 429
	refusedUnauthorized   = "unauthenticated"         // 401 (or 101 then 4001 under reject_with: close)
	refusedAuthError      = "auth_unavailable"        // 503: the chain could not decide
	refusedAuthOverloaded = "auth_overloaded"         // 503: every plugin call slot busy past auth.queue
	refusedForbidden      = "forbidden"               // 403: scopes or role
	refusedUpgradeFailed  = "upgrade_failed"          // gws refused the handshake itself (400)
	refusedShuttingDown   = "shutting_down"           // the server is shutting down
	rateLimitFailures     = "failures"                // auth.failures_per_minute
	rateLimitUnauthSocket = "unauthenticated_sockets" // auth.unauthenticated_per_address
)

// socketRoutes are the routes whose sockets are measured.
var socketRoutes = []core.Route{core.RouteEvents, core.RouteRuntime}

func newServerMetrics(reg prometheus.Registerer, s *Server) *serverMetrics {
	if reg == nil {
		return nil
	}
	m := &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_server_http_requests_total",
			Help: "HTTP requests answered, by route pattern, method (other outside the known set) and status code; upgraded sockets are not counted.",
		}, []string{"handler", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agent_server_http_request_duration_seconds",
			Help:    "Duration of HTTP requests, by route pattern; upgraded sockets are not counted.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},

			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"handler"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_server_socket_upgrades_refused_total",
			Help: "WebSocket handshakes refused before the upgrade, by route and reason.",
		}, []string{"route", "reason"}),
		rateLimits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_server_auth_rate_limited_total",
			Help: "Requests refused with 429 before any plugin ran, by route and limit (failures, unauthenticated_sockets).",
		}, []string{"route", "reason"}),
		routes: map[core.Route]*routeMetrics{},
	}
	open := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agent_server_sockets_open",
		Help: "Open WebSockets, by route and state: authenticating (waiting for a first message) or open.",
	}, []string{"route", "state"})
	closes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agent_server_socket_closes_total",
		Help: "Closed WebSockets, by route and close code: the one the server sent, else the client's (other outside the known codes), else 1006.",
	}, []string{"route", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agent_server_socket_duration_seconds",
		Help:    "How long WebSockets stayed open, by route.",
		Buckets: []float64{.01, .1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},

		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}, []string{"route"})
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agent_server_socket_frames_total",
		Help: "WebSocket frames, by route and direction: in (client messages) and out (every frame written, control frames included).",
	}, []string{"route", "direction"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agent_server_socket_bytes_total",
		Help: "WebSocket bytes, by route and direction: in (message payloads) and out (framed bytes written).",
	}, []string{"route", "direction"})
	slow := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agent_server_slow_consumer_closes_total",
		Help: "WebSockets closed with 4008 because their outbound queue passed limits.send_queue_bytes.",
	}, []string{"route"})
	// Observed once per write, on the fan-out path: classic buckets only,
	// since native ones cost 45 ns an observation instead of 13
	// (docs/benchmarks.md, "What the metrics cost").
	queue := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agent_server_socket_queue_bytes",
		Help:    "Most bytes a socket's send queue held during one write (those written and those queued meanwhile), the figure limits.send_queue_bytes bounds; one observation per write.",
		Buckets: []float64{0, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20},
	}, []string{"route"})
	for _, route := range socketRoutes {
		r := string(route)
		m.routes[route] = &routeMetrics{
			authenticating: open.WithLabelValues(r, "authenticating"),
			open:           open.WithLabelValues(r, "open"),
			closes:         closes.MustCurryWith(prometheus.Labels{"route": r}),
			duration:       duration.WithLabelValues(r),
			framesIn:       frames.WithLabelValues(r, "in"),
			framesOut:      frames.WithLabelValues(r, "out"),
			bytesIn:        bytes.WithLabelValues(r, "in"),
			bytesOut:       bytes.WithLabelValues(r, "out"),
			slow:           slow.WithLabelValues(r),
			queue:          queue.WithLabelValues(r),
		}
	}
	tlsRefused := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "agent_server_tls_handshakes_refused_total",
		Help: "TLS handshakes the server refused (a bad or missing client certificate, a protocol error); 0 without server.tls.",
	}, func() float64 { return float64(s.TLSHandshakesRefused()) })
	reg.MustRegister(m.requests, m.requestDuration, m.refusals, m.rateLimits, open, closes, duration, frames, bytes, slow, queue, tlsRefused)
	return m
}

// route returns the children of a socket route, nil when not measured.
func (m *serverMetrics) route(r core.Route) *routeMetrics {
	if m == nil {
		return nil
	}
	return m.routes[r]
}

// knownMethods are the HTTP methods counted by name; the rest are other.
var knownMethods = map[string]string{"GET": "GET", "HEAD": "HEAD", "POST": "POST", "PUT": "PUT", "PATCH": "PATCH", "DELETE": "DELETE", "OPTIONS": "OPTIONS"}

// request counts one answered request.
func (m *serverMetrics) request(handler, method string, code int, took time.Duration) {
	if m == nil {
		return
	}
	name, ok := knownMethods[method]
	if !ok {
		name = "other"
	}
	m.requests.WithLabelValues(handler, name, strconv.Itoa(code)).Inc()
	m.requestDuration.WithLabelValues(handler).Observe(took.Seconds())
}

// refused counts a handshake refused before the upgrade.
func (m *serverMetrics) refused(route core.Route, reason string) {
	if m != nil {
		m.refusals.WithLabelValues(string(route), reason).Inc()
	}
}

// rateLimited counts a 429.
func (m *serverMetrics) rateLimited(route core.Route, reason string) {
	if m != nil {
		m.rateLimits.WithLabelValues(string(route), reason).Inc()
	}
}

// The socket states of agent_server_sockets_open.
const (
	stateNone int32 = iota
	stateAuthenticating
	stateOpen
	stateClosed
)

// opened counts a socket into state.
func (m *routeMetrics) opened(state int32) {
	switch {
	case m == nil:
	case state == stateAuthenticating:
		m.authenticating.Inc()
	case state == stateOpen:
		m.open.Inc()
	}
}

// left counts a socket out of state.
func (m *routeMetrics) left(state int32) {
	switch {
	case m == nil:
	case state == stateAuthenticating:
		m.authenticating.Dec()
	case state == stateOpen:
		m.open.Dec()
	}
}

// closed records a socket's end: its close code, how long it was open,
// and whether it was a slow consumer.
func (m *routeMetrics) closed(code uint16, open time.Duration) {
	if m == nil {
		return
	}
	m.closes.WithLabelValues(closeCodeLabel(code)).Inc()
	m.duration.Observe(open.Seconds())
	if code == core.CloseSlowConsumer {
		m.slow.Inc()
	}
}

// received counts one inbound message of n bytes.
func (m *routeMetrics) received(n int) {
	if m != nil {
		m.framesIn.Inc()
		m.bytesIn.Add(float64(n))
	}
}

// wrote counts one batch written: frames frames of n bytes in all.
func (m *routeMetrics) wrote(frames, n int) {
	if m != nil {
		m.framesOut.Add(float64(frames))
		m.bytesOut.Add(float64(n))
	}
}

// knownCloseCodes are the close codes counted by number.
var knownCloseCodes = codeNames(1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 4001, 4003, 4004, 4008)

func codeNames(codes ...uint16) map[uint16]string {
	m := make(map[uint16]string, len(codes))
	for _, c := range codes {
		m[c] = strconv.Itoa(int(c))
	}
	return m
}

// closeCodeLabel is code as a label value: its number when known, else
// other (a client chooses the code it sends).
func closeCodeLabel(code uint16) string {
	if s, ok := knownCloseCodes[code]; ok {
		return s
	}
	return "other"
}
