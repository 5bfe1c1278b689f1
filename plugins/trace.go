package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/agent-server/agent-server/core"
)

// Tracing across the plugin boundary. The host traces each plugin call
// (spanPluginCall) and sends only the trace context to the plugin process:
// plugins run with an empty environment, and the host's OTEL_* variables
// may hold secrets (OTEL_EXPORTER_OTLP_HEADERS). On the protocol 3 stream
// and the protocol 4 channel the context travels inside each call
// (authpb.Call.trace_context, written by client_stream.go, read by
// server_stream.go), since one stream carries the calls of many requests; to an older plugin it travels in the unary
// call's gRPC metadata, through the two interceptors below. Inside the
// plugin the SDK puts it in the ctx Authenticate gets, so the plugin's
// spans (SpanAuthenticate, and the author's own) join the request's trace.
// A plugin exports its spans only when its config has a "tracing" entry
// (see tracingConfig).

// tracerName names the tracer of this package, host and SDK alike.
const tracerName = "github.com/agent-server/agent-server/plugins"

// Span names and attributes. Attributes never carry a credential.
const (
	// spanPluginCall is the host's span of one plugin call (a cache hit
	// included), a child of the request's span.
	spanPluginCall = "auth.plugin"
	// SpanAuthenticate is the span the SDK opens in the plugin process
	// around each Authenticate, a child of the host's spanPluginCall.
	SpanAuthenticate = "plugin.authenticate"

	attrPlugin   = "agent_server.plugin"
	attrRoute    = "agent_server.route"
	attrDecision = "agent_server.auth.decision"
	attrCached   = "agent_server.auth.cached"
)

// endPluginSpan records res on span and ends it.
func endPluginSpan(span trace.Span, res core.Result) {
	if span.IsRecording() {
		span.SetAttributes(attribute.String(attrDecision, res.Decision.String()), attribute.Bool(attrCached, res.Cached))
		if res.Decision == core.Error {
			span.SetStatus(codes.Error, "the plugin could not decide")
		}
	}
	span.End()
}

// mdCarrier lets a propagator read and write gRPC metadata.
type mdCarrier metadata.MD

// Get returns the first value of key.
func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set sets key to value.
func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

// Keys lists the keys.
func (c mdCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// injectTraceContext is the host's client interceptor: it writes the
// call's trace context into the outgoing metadata with the global
// propagator (which cmd sets; it writes nothing while tracing is off).
func injectTraceContext(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if trace.SpanContextFromContext(ctx).IsValid() {
		md, _ := metadata.FromOutgoingContext(ctx)
		md = md.Copy()
		otel.GetTextMapPropagator().Inject(ctx, mdCarrier(md))
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// pluginPropagator is the propagator inside a plugin process: W3C trace
// context, whatever the host's own settings.
var pluginPropagator = propagation.TraceContext{}

// extractTraceContext is the SDK's server interceptor: it puts the trace
// context the host sent into the handler's ctx.
func extractTraceContext(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = pluginPropagator.Extract(ctx, mdCarrier(md))
	}
	return handler(ctx, req)
}

// Tracer returns the tracer a plugin author starts spans with, from the
// ctx Authenticate gets, so that they join the request's trace:
//
//	ctx, span := plugins.Tracer().Start(ctx, "team.lookup")
//	defer span.End()
//
// Its spans are exported when the plugin's config has a tracing entry, and
// dropped otherwise. Never put a credential in a span's name or attributes.
func Tracer() trace.Tracer { return otel.Tracer(tracerName) }

// tracingKey is the plugin config entry the SDK reads (and removes before
// the plugin's Configure sees the config):
//
//	plugins:
//	  instances:
//	    team:
//	      config:
//	        tracing:
//	          endpoint: http://127.0.0.1:4318   # OTLP/HTTP; spans go to <endpoint>/v1/traces
//	          headers: {authorization: ...}    # optional; a secret stays in this config
//	          service_name: auth-team           # optional; default auth-<Info().Name>
const tracingKey = "tracing"

// tracingConfig is the tracing entry of a plugin's config.
type tracingConfig struct {
	Endpoint    string            `json:"endpoint"`
	Headers     map[string]string `json:"headers"`
	ServiceName string            `json:"service_name"`
}

// sdkTracing is the plugin process's tracer provider, set up at the first
// Configure whose config has a tracing entry.
type sdkTracing struct {
	mu       sync.Mutex
	provider *sdktrace.TracerProvider
	applied  string // the tracing entry it was built from
}

// takeTracing splits the tracing entry off a plugin config. It returns the
// config without it and the entry (nil when there is none).
func takeTracing(raw json.RawMessage) (json.RawMessage, *tracingConfig, error) {
	if !strings.Contains(string(raw), `"`+tracingKey+`"`) {
		return raw, nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return raw, nil, nil // not an object: the plugin's DecodeConfig says so
	}
	entry, ok := m[tracingKey]
	if !ok {
		return raw, nil, nil
	}
	delete(m, tracingKey)
	var tc tracingConfig
	dec := json.NewDecoder(strings.NewReader(string(entry)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tc); err != nil {
		return nil, nil, fmt.Errorf("config tracing: %w", err)
	}
	if tc.Endpoint == "" {
		return nil, nil, errors.New("config tracing: endpoint is required (the OTLP/HTTP base URL, e.g. http://127.0.0.1:4318)")
	}
	rest, err := json.Marshal(m)
	if err != nil {
		return nil, nil, err
	}
	return rest, &tc, nil
}

// apply sets the process's tracer provider from tc, once; a changed entry
// is refused (it takes a restart of the plugin).
func (t *sdkTracing) apply(ctx context.Context, tc *tracingConfig, plugin string) error {
	key, _ := json.Marshal(tc)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.provider != nil {
		if string(key) != t.applied {
			return errors.New("config tracing: changed while the plugin runs; restart the server to apply it")
		}
		return nil
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(strings.TrimSuffix(tc.Endpoint, "/") + "/v1/traces")}
	if len(tc.Headers) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(tc.Headers))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return fmt.Errorf("config tracing: %w", err)
	}
	name := tc.ServiceName
	if name == "" {
		name = "auth-" + plugin
	}
	t.provider = sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", name))),
	)
	t.applied = string(key)
	otel.SetTracerProvider(t.provider)
	return nil
}
