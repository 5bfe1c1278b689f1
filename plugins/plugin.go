package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// ProtocolVersion is the version of the host<->plugin contract that Serve
// speaks. Version 2 added the client certificate input, inputs that depend
// on the config (InputsConfigurer), Result.RequestFault and Result.MaxAge.
// Version 3 carries every Authenticate over one multiplexed stream per
// plugin process (authpb's Stream) instead of one unary call each; the
// Plugin interface did not change. Version 4 carries the same calls and
// replies over a private channel the process inherits instead of the gRPC
// stream (channel.go). auth.proto keeps the history.
const ProtocolVersion = 4

// streamVersion is the first protocol whose Authenticate calls go over the
// Stream.
const streamVersion = 3

// channelVersion is the first protocol whose Authenticate calls go over
// the channel.
const channelVersion = 4

// acceptedVersions are the protocol versions the host speaks. A plugin
// built against an older SDK negotiates the newest version both know, so a
// version 3 plugin keeps the gRPC stream, and a version 1 or 2 plugin the
// unary Authenticate (a version 1 plugin cannot declare the client
// certificate input and never sets the fields version 2 added). A plugin
// of a version not listed is refused at the handshake with a message to
// rebuild it. Version 4 is offered only where there are channels.
var acceptedVersions = hostVersions(channelSupported)

// hostVersions are the versions a host speaks, with or without channels.
func hostVersions(channels bool) []uint {
	if channels {
		return []uint{1, 2, streamVersion, channelVersion}
	}
	return []uint{1, 2, streamVersion}
}

// servedVersions are the versions Serve offers: version 4 when the host
// handed the process a channel, version 3 for a host that gave none (an
// older one, or a platform without channels), and version 2 for a host
// that predates the stream, which then calls the unary Authenticate.
func servedVersions(channel bool) []int {
	if channel {
		return []int{2, streamVersion, channelVersion}
	}
	return []int{2, streamVersion}
}

// pluginKey is the name of the one plugin in every go-plugin PluginSet.
const pluginKey = "authenticator"

// handshake returns the go-plugin handshake for a protocol version. The magic
// cookie only stops a plugin binary run by hand from hanging; it is not a
// security measure.
func handshake(version uint) goplugin.HandshakeConfig {
	return goplugin.HandshakeConfig{
		ProtocolVersion:  version,
		MagicCookieKey:   "AGENT_SERVER_AUTH_PLUGIN",
		MagicCookieValue: "7f3c1e0a-authenticator",
	}
}

// Plugin is what an authenticator plugin implements. The host calls Info,
// then Configure once, then Authenticate for every request whose declared
// inputs are present. Implementations must be safe for concurrent use.
type Plugin interface {
	// Info describes the plugin. It must not depend on configuration.
	Info(ctx context.Context) Info
	// Configure receives the plugin's configuration; an error fails the
	// server's boot with a message naming the plugin.
	Configure(ctx context.Context, req ConfigureRequest) error
	// Authenticate decides one request: Allow, Deny, Abstain or Error.
	Authenticate(ctx context.Context, req *core.Request) core.Result
}

// Info is what a plugin declares about itself.
type Info struct {
	Name      string // short name, e.g. "query"
	Version   string // the plugin's own version, shown by `plugins list`
	Inputs    Inputs // the request parts that carry its credential
	WantsKeys bool   // whether it needs the session API keys (as digests)
}

// Inputs are the credential-bearing request parts a plugin reads. The host
// skips a plugin, without an RPC, when none of them is present, and sends
// it only these parts of the request.
type Inputs struct {
	QueryParams  []string // query parameter names, matched exactly
	Headers      []string // header names, matched in any case
	Subprotocol  bool     // the offered WebSocket subprotocols
	FirstMessage bool     // the first WebSocket frame
	// ClientCertificate is the client certificate chain the server's TLS
	// handshake verified against server.tls.client_ca_file, leaf first,
	// in core.Request.ClientCertificates. A certificate that failed
	// verification never reaches a plugin.
	ClientCertificate bool
	// Request says the plugin's decision depends on the request line and
	// its client as well: the method, the path, the Origin header and the
	// client's address, which every call carries. The decision cache then
	// keys the plugin's decisions by them too (by the client's host, not
	// its port), so that an answer for one path, method or client is never
	// reused for another. It is not a credential: it never makes the host
	// ask a plugin that it would otherwise skip.
	Request bool
}

// InputsConfigurer is implemented by a plugin whose inputs depend on its
// config, such as the headers a webhook forwards. After every successful
// Configure the host asks for ConfiguredInputs and uses them instead of the
// inputs Info declared. A reload that changes them needs a restart.
type InputsConfigurer interface {
	ConfiguredInputs() Inputs
}

// ConfigureRequest carries a plugin's configuration.
type ConfigureRequest struct {
	// Config is plugins.instances.<name>.config as a JSON object ("{}" when
	// absent). Decode it with DecodeConfig.
	Config json.RawMessage
	// KeyDigests are the session API keys as "sha256:<hex>" digests, set
	// only when Info.WantsKeys. core.NewKeySet accepts them as they are.
	KeyDigests []string
	// RuntimeKeyDigests are the agent runtime keys (auth.runtime_keys), in
	// the same form, set with KeyDigests. A principal allowed by one of them
	// should carry core.RoleRuntime.
	RuntimeKeyDigests []string
}

// DecodeConfig decodes the plugin config into v, refusing unknown fields so a
// typo fails at boot instead of being ignored.
func (r ConfigureRequest) DecodeConfig(v any) error {
	raw := r.Config
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode plugin config: %w", err)
	}
	return nil
}

// Serve runs p as a plugin process, talking gRPC to the host. It is the only
// call in a plugin's main and does not return. Run by hand, outside a host,
// it prints a short explanation and exits. It sets the garbage collector's
// target to pluginGCPercent unless GOGC is set.
func Serve(p Plugin) {
	go exitWithParent(os.Getppid(), time.Second)
	setGCPercent(os.Getenv)
	srv := &grpcServer{impl: p, log: Logger(), tracing: &sdkTracing{}}
	channel := inheritedChannel(os.Getenv)
	os.Unsetenv(channelEnv) // a process this plugin starts has no such descriptor
	if channel != nil {
		go func() {
			if err := srv.serveChannel(channel); err != nil {
				srv.log.Error("plugin channel failed", "err", err)
			}
		}()
	}
	versions := servedVersions(channel != nil)
	versioned := make(map[int]goplugin.PluginSet, len(versions))
	for _, v := range versions {
		versioned[v] = goplugin.PluginSet{pluginKey: &grpcPlugin{srv: srv}}
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  handshake(ProtocolVersion),
		VersionedPlugins: versioned,
		GRPCServer:       newGRPCServer,
		Logger:           newPluginHCLogger(),
	})
}

// pluginGCPercent is a plugin process's GOGC, server.gc_percent's
// default: the gRPC and protobuf registries every plugin holds make each
// collection cost much for the little garbage a call leaves, and the
// collector was an eighth of the jwt plugin's CPU at Go's 100.
var pluginGCPercent = defaults.Server.GCPercent

// setGCPercent sets pluginGCPercent unless GOGC is set (getenv reads it).
func setGCPercent(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(pluginGCPercent)
	}
}

// newGRPCServer is the plugin process's gRPC server, with go-plugin's
// options: it joins each unary call's trace, and receives messages up to
// maxRecvBytes, past gRPC's default 4 MiB, so that no host's message too
// large for that ends the process's stream.
func newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(opts, grpc.ChainUnaryInterceptor(extractTraceContext), grpc.MaxRecvMsgSize(maxRecvBytes))...)
}

// exitWithParent ends the plugin when the host that started it dies, even
// when the host was killed before it could stop its plugins. On Linux the
// host also asks the kernel for SIGKILL on its death; this covers the rest.
func exitWithParent(ppid int, every time.Duration) {
	if ppid <= 1 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		if os.Getppid() != ppid {
			os.Exit(2)
		}
	}
}

// grpcPlugin is the go-plugin glue: it binds Plugin to the gRPC service on
// both sides. srv is set only on the plugin side, and also serves the
// channel there.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	srv *grpcServer
}

// GRPCServer registers the plugin implementation (plugin side).
func (g *grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	if g.srv == nil {
		return errors.New("no plugin implementation to serve")
	}
	authpb.RegisterAuthenticatorServer(s, g.srv)
	return nil
}

// GRPCClient returns the host's stub for the plugin (host side).
func (g *grpcPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &grpcClient{rpc: authpb.NewAuthenticatorClient(c)}, nil
}

var _ goplugin.GRPCPlugin = (*grpcPlugin)(nil)
