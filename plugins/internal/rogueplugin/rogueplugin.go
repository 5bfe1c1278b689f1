// Package rogueplugin is a plugin that breaks protocols 3 and 4 on
// purpose, for the host's fault tests. It is written against go-plugin and
// authpb directly, as a plugin author not using the SDK would, since the
// SDK cannot be made to misbehave this way. Run under a name ending in
// "-channel" it speaks protocol 4 on the channel its host hands it;
// otherwise protocol 3 on the gRPC Stream. Its config's mode picks how it
// answers each call:
//
//	unknown    with an ID the host never sent
//	duplicate  twice, in one batch of replies
//	zero       with ID 0
//	honest     correctly (allow, subject "rogue")
//
// and, on the channel only, with a frame the protocol does not allow:
//
//	garbage    a frame that is not a Replies message
//	oversize   a frame header announcing 2 GiB
//	torn       half a frame, and then the channel closed (the process lives on)
package rogueplugin

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/plugins/authpb"
)

// InputHeader is the header the plugin declares.
const InputHeader = "X-Rogue"

// Main is the plugin binary's whole main: the host's handshake, protocol 4
// on the channel when run as auth-rogue-channel, else protocol 3 only.
func Main() {
	srv := &server{}
	version := 3
	if strings.HasSuffix(filepath.Base(os.Args[0]), "-channel") {
		conn, err := inheritedChannel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "rogue:", err)
			os.Exit(1)
		}
		version = 4
		go srv.serveChannel(conn)
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: goplugin.HandshakeConfig{
			ProtocolVersion:  uint(version),
			MagicCookieKey:   "AGENT_SERVER_AUTH_PLUGIN",
			MagicCookieValue: "7f3c1e0a-authenticator",
		},
		Plugins:    goplugin.PluginSet{"authenticator": &glue{srv: srv}},
		GRPCServer: goplugin.DefaultGRPCServer,
	})
}

// inheritedChannel opens the channel the host named in
// AGENT_SERVER_PLUGIN_CHANNEL_FD.
func inheritedChannel() (net.Conn, error) {
	fd, err := strconv.Atoi(os.Getenv("AGENT_SERVER_PLUGIN_CHANNEL_FD"))
	if err != nil {
		return nil, fmt.Errorf("no channel from the host: %w", err)
	}
	f := os.NewFile(uintptr(fd), "channel")
	defer f.Close()
	return net.FileConn(f)
}

// glue registers the rogue server.
type glue struct {
	goplugin.NetRPCUnsupportedPlugin
	srv *server
}

// GRPCServer registers the service.
func (g *glue) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	authpb.RegisterAuthenticatorServer(s, g.srv)
	return nil
}

// GRPCClient is never used: this binary only serves.
func (g *glue) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("rogueplugin serves only")
}

// server misbehaves on the Stream.
type server struct {
	authpb.UnimplementedAuthenticatorServer
	mode atomic.Value // string; set by Configure before any call
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
	case "unknown", "duplicate", "zero", "honest", "garbage", "oversize", "torn":
		s.mode.Store(cfg.Mode)
		return &authpb.ConfigureResponse{}, nil
	}
	return nil, fmt.Errorf("unknown mode %q", cfg.Mode)
}

// Stream answers each batch of calls as the mode says.
func (s *server) Stream(st authpb.Authenticator_StreamServer) error {
	for {
		calls, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.Send(s.replies(calls)); err != nil {
			return err
		}
	}
}

// replies are the mode's answers to calls.
func (s *server) replies(calls *authpb.Calls) *authpb.Replies {
	allow := &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ALLOW, Principal: &authpb.Principal{Subject: "rogue"}}
	var out []*authpb.Reply
	for _, c := range calls.GetCalls() {
		switch s.mode.Load() {
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
	return &authpb.Replies{Replies: out}
}

// serveChannel answers the calls framed on conn (a 4-byte big-endian
// length, then the message) as the mode says.
func (s *server) serveChannel(conn net.Conn) {
	defer conn.Close()
	for {
		var head [4]byte
		if _, err := io.ReadFull(conn, head[:]); err != nil {
			return
		}
		raw := make([]byte, binary.BigEndian.Uint32(head[:]))
		if _, err := io.ReadFull(conn, raw); err != nil {
			return
		}
		calls := &authpb.Calls{}
		if err := proto.Unmarshal(raw, calls); err != nil {
			return
		}
		var frame []byte
		switch s.mode.Load() {
		case "garbage":
			frame = []byte{0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff}
		case "oversize":
			frame = []byte{0x80, 0, 0, 0}
		case "torn":
			frame = []byte{0, 0, 0, 100, 1, 2, 3}
		default:
			out, err := proto.Marshal(s.replies(calls))
			if err != nil {
				return
			}
			frame = binary.BigEndian.AppendUint32(nil, uint32(len(out)))
			frame = append(frame, out...)
		}
		if _, err := conn.Write(frame); err != nil {
			return
		}
		if s.mode.Load() == "torn" {
			return // closes the channel mid-frame
		}
	}
}
