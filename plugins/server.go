package plugins

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// grpcServer runs inside the plugin process and serves a Plugin over gRPC.
// A panic in the plugin is caught and logged, and the call fails, so one bad
// request does not take the process down.
type grpcServer struct {
	authpb.UnimplementedAuthenticatorServer
	impl    Plugin
	log     *slog.Logger
	tracing *sdkTracing // the tracing config entry's exporter; nil in tests
}

// Info serves the plugin's Info.
func (s *grpcServer) Info(ctx context.Context, _ *authpb.InfoRequest) (resp *authpb.InfoResponse, err error) {
	defer s.recoverInto("Info", &err)
	return infoToPB(s.impl.Info(ctx)), nil
}

// Configure hands the config to the plugin; its error becomes
// InvalidArgument. A plugin whose inputs depend on the config answers them.
func (s *grpcServer) Configure(ctx context.Context, req *authpb.ConfigureRequest) (resp *authpb.ConfigureResponse, err error) {
	defer s.recoverInto("Configure", &err)
	creq := configureFromPB(req)
	cfg, tc, err := takeTracing(creq.Config)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	creq.Config = cfg
	if tc != nil && s.tracing != nil {
		if err := s.tracing.apply(ctx, tc, s.impl.Info(ctx).Name); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	if err := s.impl.Configure(ctx, creq); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp = &authpb.ConfigureResponse{}
	if ic, ok := s.impl.(InputsConfigurer); ok {
		resp.Inputs = inputsToPB(ic.ConfiguredInputs())
	}
	return resp, nil
}

// Authenticate decides one request (protocols 1 and 2).
func (s *grpcServer) Authenticate(ctx context.Context, req *authpb.AuthenticateRequest) (*authpb.AuthenticateResponse, error) {
	return s.decide(ctx, requestFromPB(req)), nil
}

// decide runs the plugin on one request, in a SpanAuthenticate span that
// joins the host's trace. A panic becomes a logged DECISION_ERROR.
func (s *grpcServer) decide(ctx context.Context, req *core.Request) (resp *authpb.AuthenticateResponse) {
	defer func() {
		if v := recover(); v != nil {
			s.logPanic("Authenticate", v)
			resp = &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ERROR, Error: "plugin panicked in Authenticate"}
		}
	}()
	ctx, span := Tracer().Start(ctx, SpanAuthenticate, serverSpan)
	res := s.impl.Authenticate(ctx, req)
	endPluginSpan(span, res)
	return resultToPB(res)
}

// serverSpan is the option of every SpanAuthenticate span, made once: an
// option made per call is an allocation per call.
var serverSpan = trace.WithSpanKind(trace.SpanKindServer)

// recoverInto turns a panic in method into a logged event and an Internal
// gRPC error, which the host maps to an Error decision.
func (s *grpcServer) recoverInto(method string, err *error) {
	if v := recover(); v != nil {
		s.logPanic(method, v)
		*err = status.Errorf(codes.Internal, "plugin panicked in %s", method)
	}
}

// logPanic logs a panic the plugin raised in method, with its stack.
func (s *grpcServer) logPanic(method string, v any) {
	s.log.Error("plugin panicked", "method", method, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

var _ authpb.AuthenticatorServer = (*grpcServer)(nil)
