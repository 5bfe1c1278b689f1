package cli

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// startTracing sets the process's tracer provider and propagator, once,
// when tracing.enabled is on: an OTLP/HTTP exporter configured by the
// standard OTEL_* environment variables (endpoint, headers, timeout,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, ...)
// and W3C trace context with baggage. It returns the provider packages
// take and a function that flushes and stops it; off, it returns nil.
func startTracing(ctx context.Context, enabled bool, getenv func(string) string) (trace.TracerProvider, func(context.Context) error, error) {
	if !enabled {
		return nil, func(context.Context) error { return nil }, nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := getenv(name); p != "" {
			if p != "http/protobuf" {
				return nil, nil, fmt.Errorf("tracing.enabled: %s=%s: only http/protobuf is supported", name, p)
			}
			break
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing.enabled: OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", serviceName(getenv)), attribute.String("service.version", Version)))
	if err != nil {
		return nil, nil, fmt.Errorf("tracing.enabled: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp, tp.Shutdown, nil
}

// serviceName is OTEL_SERVICE_NAME, else agent-server.
func serviceName(getenv func(string) string) string {
	if n := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); n != "" {
		return n
	}
	return "agent-server"
}
