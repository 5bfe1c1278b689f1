package plugins

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	"go.opentelemetry.io/otel/propagation"

	"github.com/agent-server/agent-server/plugins/authpb"
)

// Stream serves protocol 3 inside the plugin process: the host's calls
// arrive in batches on one stream, each runs in a goroutine of its own (as
// a unary call would), and each is answered exactly once, batched with the
// other replies ready at that moment: with the plugin's result, or, when
// the call's deadline passes first, with an Error (the host has given up
// by then; the plugin's late result is dropped). The trace context travels
// inside each call.
func (s *grpcServer) Stream(st authpb.Authenticator_StreamServer) error {
	failed := make(chan error, 1)
	w := newBatchWriter(func(rs []*authpb.Reply) error {
		return st.Send(&authpb.Replies{Replies: rs})
	}, func(err error) { failed <- err })
	defer w.stop()
	ctx := st.Context()
	for {
		calls, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case err := <-failed:
			return err
		default:
		}
		for _, c := range calls.GetCalls() {
			go s.serveCall(ctx, c, w)
		}
	}
}

// serveCall runs one call and queues its one reply.
func (s *grpcServer) serveCall(ctx context.Context, c *authpb.Call, w *batchWriter[*authpb.Reply]) {
	if tc := c.GetTraceContext(); len(tc) > 0 {
		ctx = pluginPropagator.Extract(ctx, propagation.MapCarrier(tc))
	}
	if c.GetTimeout() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.GetTimeout().AsDuration())
		defer cancel()
	}
	var answered atomic.Bool
	answer := func(resp *authpb.AuthenticateResponse) {
		if answered.CompareAndSwap(false, true) {
			w.add(&authpb.Reply{Id: c.GetId(), Response: resp})
		}
	}
	stop := context.AfterFunc(ctx, func() {
		answer(&authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ERROR, Error: "the plugin did not answer within the call's deadline: " + context.Cause(ctx).Error()})
	})
	resp := s.decide(ctx, c.GetRequest())
	stop()
	answer(resp)
}
