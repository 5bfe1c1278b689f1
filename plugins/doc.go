// Package plugins is the authenticator plugin contract, its SDK and its
// host.
//
// Every request agent-server serves is authenticated by a core.Chain of
// authenticators, and each authenticator is a separate binary run through
// hashicorp/go-plugin over gRPC (never net/rpc), with automatic mTLS, an
// empty environment and a versioned handshake (ProtocolVersion; the host
// still accepts plugins built against protocols 1 to 3, and a plugin built
// now still serves a host of protocol 2 or 3). From protocol 3 every
// Authenticate travels on one long-lived bidirectional stream per plugin
// process, each call with an ID, its deadline and its trace context, the
// calls queued while a batch is being sent going out together
// (client_stream.go, server_stream.go); Info and Configure, and every call
// of an older plugin, stay unary. From protocol 4 the same calls travel on
// a private socketpair the process inherits, without gRPC, HTTP/2 or TLS
// (channel.go), read and written with raw system calls on Linux
// (rawio_linux.go). docs/plugins-transport.md has the measurements that chose
// them.
//
// # For plugin authors
//
// Implement Plugin and call Serve from main; that is the whole plugin:
//
//	func main() { plugins.Serve(myplugin.New()) }
//
// Info declares the plugin's name, version and the request inputs its
// credential travels in (query parameters, headers, subprotocols, the first
// message, the verified client certificate), and whether it needs the
// session API keys. A plugin whose inputs depend on its config implements
// InputsConfigurer. The host calls
// Authenticate only when one of those inputs is present, and sends only
// those parts of the request. Configure receives the plugin's own config
// (plugins.instances.<name>.config as JSON; use DecodeConfig) and, if asked
// for, the session API keys as "sha256:<hex>" digests: a plugin never sees a
// plaintext key. Log with Logger; records reach the server's log with the
// attribute plugin=<name>. Nothing may be printed to stdout before Serve.
//
// Plugins that share an input abstain on credentials that are not theirs:
// the first plugin that does not abstain decides, and a wrong credential is
// never retried with the next one.
//
// The built-in plugins live in query, header, bearer, jwt, subprotocol (a key
// in a Sec-WebSocket-Protocol entry, for browsers), firstmessage (chain
// name first_message: a key in the socket's first frame, for OpenHands
// clients), oidc (OpenID Connect ID tokens), webhook (forward
// authentication) and mtls (client certificates); jwt is built exactly as a
// third-party plugin would be.
//
// # For the server
//
// NewHost has no side effects. Host.Start verifies each binary's optional
// sha256 pin, launches plugins.processes processes of it, handshakes, and
// sends Info and Configure; a bad binary or plugin config fails boot with
// an error naming the plugin. Host.Chain returns the compiled chain of a
// route. Each plugin becomes a core.Authenticator that skips requests
// without its inputs (no RPC), answers repeated credentials from a decision
// cache keyed by an HMAC under a per-process secret, and otherwise hands the
// call to its first live process with a free call slot
// (plugins.max_in_flight per process), the others standing by warm; when
// every slot is busy the call waits in a bounded queue (auth.queue) and is
// refused with core.ErrOverloaded past it (admission.go). Each call has the
// auth.rpc_timeout deadline, and fails closed (core.Error) when its
// process dies, hangs or breaks the protocol; while no process is up, every
// call does. A supervisor per process restarts it with exponential backoff
// (and kills one that left a call unanswered long past its deadline);
// Host.Ready reports readiness (a plugin is up while any of its processes
// is), Host.Status what is degraded, and Host.Health the state of each
// plugin and process. Host.Reload re-sends keys and plugin
// configs and empties the cache; Host.Close kills every plugin, and plugins
// also die with the server when it is killed (Pdeathsig on Linux, and a
// parent watch inside Serve).
//
// Describe and Verify back `agent-server plugins list` and `plugins verify`.
package plugins
