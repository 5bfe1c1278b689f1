package plugins

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// grpcClient is the host's stub for one plugin process.
type grpcClient struct {
	rpc authpb.AuthenticatorClient
}

func (c *grpcClient) info(ctx context.Context) (Info, error) {
	resp, err := c.rpc.Info(ctx, &authpb.InfoRequest{})
	if err != nil {
		return Info{}, fmt.Errorf("info rpc: %w", rpcError(err))
	}
	return infoFromPB(resp), nil
}

// configure sends the config. It returns the inputs the plugin declared for
// that config, or nil when it keeps those of Info.
func (c *grpcClient) configure(ctx context.Context, req ConfigureRequest) (*Inputs, error) {
	resp, err := c.rpc.Configure(ctx, configureToPB(req))
	if err != nil {
		if s, ok := status.FromError(err); ok && s.Code() == codes.InvalidArgument {
			err = refusal{rpcError(err)}
		} else {
			err = rpcError(err)
		}
		return nil, fmt.Errorf("configure rpc: %w", err)
	}
	if resp.GetInputs() == nil {
		return nil, nil
	}
	in := inputsFromPB(resp.GetInputs())
	return &in, nil
}

func (c *grpcClient) authenticate(ctx context.Context, req *core.Request, in Inputs) core.Result {
	resp, err := c.rpc.Authenticate(ctx, requestToPB(req, in))
	if err != nil {
		return core.Failed(fmt.Errorf("authenticate rpc: %w", rpcError(err)))
	}
	return resultFromPB(resp)
}

// refusal is a Configure the plugin answered with its refusal: it keeps
// the config it runs. Any other failure (a deadline, a broken transport)
// leaves unknown which config the process will run.
type refusal struct{ err error }

// Error is the plugin's refusal, as rpcError flattened it.
func (r refusal) Error() string { return r.err.Error() }

// Unwrap returns the flattened error.
func (r refusal) Unwrap() error { return r.err }

// rpcError flattens a gRPC status into "code: message" so errors read well
// in logs, while context errors keep their identity for errors.Is.
func rpcError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s", s.Code(), s.Message())
	}
	return err
}
