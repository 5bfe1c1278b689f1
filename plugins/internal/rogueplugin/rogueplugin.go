// Package rogueplugin is a plugin that breaks protocol 3 on purpose, for
// the host's fault tests. It is written against go-plugin and authpb
// directly, as a plugin author not using the SDK would, since the SDK
// cannot be made to misbehave this way. Its config's mode picks how it
// answers each call on the Stream:
//
//	unknown    with an ID the host never sent
//	duplicate  twice, in one batch of replies
//	zero       with ID 0
//	honest     correctly (allow, subject "rogue")
package rogueplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/agent-server/agent-server/plugins/authpb"
)

// InputHeader is the header the plugin declares.
const InputHeader = "X-Rogue"

// Main is the plugin binary's whole main: the host's handshake, protocol 3
// only.
func Main() {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: goplugin.HandshakeConfig{
			ProtocolVersion:  3,
			MagicCookieKey:   "AGENT_SERVER_AUTH_PLUGIN",
			MagicCookieValue: "7f3c1e0a-authenticator",
		},
		Plugins:    goplugin.PluginSet{"authenticator": &glue{}},
		GRPCServer: goplugin.DefaultGRPCServer,
	})
}

// glue registers the rogue server.
type glue struct {
	goplugin.NetRPCUnsupportedPlugin
}

// GRPCServer registers the service.
func (g *glue) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	authpb.RegisterAuthenticatorServer(s, &server{})
	return nil
}

// GRPCClient is never used: this binary only serves.
func (g *glue) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("rogueplugin serves only")
}

// server misbehaves on the Stream.
type server struct {
	authpb.UnimplementedAuthenticatorServer
	mode string
}

// Info declares one header.
func (s *server) Info(context.Context, *authpb.InfoRequest) (*authpb.InfoResponse, error) {
	return &authpb.InfoResponse{Name: "rogue", Version: "0.0.0", Inputs: &authpb.Inputs{Headers: []string{InputHeader}}}, nil
}

// Configure reads the mode.
func (s *server) Configure(_ context.Context, req *authpb.ConfigureRequest) (*authpb.ConfigureResponse, error) {
	var cfg struct {
		Mode string `json:"mode"`
	}
	if err := json.Unmarshal(req.GetConfigJson(), &cfg); err != nil {
		return nil, err
	}
	switch cfg.Mode {
	case "unknown", "duplicate", "zero", "honest":
		s.mode = cfg.Mode
		return &authpb.ConfigureResponse{}, nil
	}
	return nil, fmt.Errorf("unknown mode %q", cfg.Mode)
}

// Stream answers each batch of calls as the mode says.
func (s *server) Stream(st authpb.Authenticator_StreamServer) error {
	allow := &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ALLOW, Principal: &authpb.Principal{Subject: "rogue"}}
	for {
		calls, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var out []*authpb.Reply
		for _, c := range calls.GetCalls() {
			switch s.mode {
			case "unknown":
				out = append(out, &authpb.Reply{Id: c.GetId() + 1_000_000, Response: allow})
			case "duplicate":
				out = append(out, &authpb.Reply{Id: c.GetId(), Response: allow}, &authpb.Reply{Id: c.GetId(), Response: allow})
			case "zero":
				out = append(out, &authpb.Reply{Id: 0, Response: allow})
			default:
				out = append(out, &authpb.Reply{Id: c.GetId(), Response: allow})
			}
		}
		if err := st.Send(&authpb.Replies{Replies: out}); err != nil {
			return err
		}
	}
}
