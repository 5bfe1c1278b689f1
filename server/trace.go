package server

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/agent-server/agent-server/core"
)

// tracerName names this package's tracer.
const tracerName = "github.com/agent-server/agent-server/server"

// Span names. A WebSocket handshake is one span, from the edge checks
// through the chain to the upgrade or the refusal, with a child per plugin
// call; the socket's life after the upgrade is not traced (it would be one
// span of hours). A REST request is one span (otelhttp).
const (
	spanHandshake = "websocket.handshake"
	spanREST      = "rest.request"
)

// Span attributes. None carries a credential.
const (
	attrRoute  = "agent_server.route"
	attrStatus = "http.response.status_code"
)

// startHandshake opens the handshake's span, a child of the trace context
// the client sent (traceparent), and notes it for the access log. Without
// tracing it returns r as it is and a nil span.
func (s *Server) startHandshake(r *http.Request, route core.Route) (*http.Request, trace.Span) {
	if s.tracer == nil {
		return r, nil
	}
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.tracer.Start(ctx, spanHandshake, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String(attrRoute, string(route))))
	infoOf(ctx).span = span.SpanContext()
	return r.WithContext(ctx), span
}

// endHandshake ends a handshake's span with the status answered (101 for
// an upgrade).
func endHandshake(span trace.Span, w http.ResponseWriter) {
	if span == nil {
		return
	}
	if rec, ok := w.(*statusRecorder); ok {
		code := rec.code()
		span.SetAttributes(attribute.Int(attrStatus, code))
		if code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(code))
		}
	}
	span.End()
}

// traceREST wraps the REST API in otelhttp's span; without tracing it
// returns next.
func (s *Server) traceREST(tp trace.TracerProvider, next http.Handler) http.Handler {
	if tp == nil {
		return next
	}
	noted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		infoOf(r.Context()).span = trace.SpanContextFromContext(r.Context())
		next.ServeHTTP(w, r)
	})
	return otelhttp.NewHandler(noted, spanREST, otelhttp.WithTracerProvider(tp),
		otelhttp.WithSpanNameFormatter(func(string, *http.Request) string { return spanREST }))
}
