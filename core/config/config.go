// Package config defines agent-server's configuration, its defaults and its
// validation, and loads it with koanf from config.yaml, the environment
// (AGENT_SERVER_ prefix, "__" between levels) and command-line flags, in that
// order of increasing precedence.
package config

import (
	"time"
)

// Config is the whole configuration. Every field maps to a key in config.yaml
// with the koanf tag's name.
type Config struct {
	Server        Server        `koanf:"server"`
	Auth          Auth          `koanf:"auth"`
	Plugins       Plugins       `koanf:"plugins"`
	Limits        Limits        `koanf:"limits"`
	Conversations Conversations `koanf:"conversations"`
	Storage       Storage       `koanf:"storage"`
	Cluster       Cluster       `koanf:"cluster"`
	Log           Log           `koanf:"log"`
	Admin         Admin         `koanf:"admin"`
	Metrics       Metrics       `koanf:"metrics"`
	Audit         Audit         `koanf:"audit"`
	Tracing       Tracing       `koanf:"tracing"`
}

// Server configures the HTTP and WebSocket listener.
type Server struct {
	Addr            string        `koanf:"addr"`
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"` // the whole graceful shutdown; handshakes get at most half
	AllowedOrigins  []string      `koanf:"allowed_origins"`
	AccessLog       bool          `koanf:"access_log"`
	// ReleaseMemoryAfter is how long the server must be quiet (no request,
	// no frame) before it returns the memory a burst left behind to the
	// OS; 0 never does.
	ReleaseMemoryAfter time.Duration `koanf:"release_memory_after"`
	// GCPercent is the Go garbage collector's target (GOGC): the heap may
	// grow by this percent of its live size before the next collection.
	// 0 keeps Go's own default (100). The GOGC environment variable, when
	// set, wins over it.
	GCPercent int `koanf:"gc_percent"`
	// TrustedProxies are the CIDRs of load balancers whose X-Forwarded-For
	// the server believes: a request from one of them is attributed to the
	// client the header names, for the abuse limits and the logs.
	TrustedProxies []string `koanf:"trusted_proxies"`
	TLS            TLS      `koanf:"tls"`
}

// TLS makes the server serve HTTPS and WSS itself, optionally verifying
// client certificates. Empty CertFile and KeyFile serve plain HTTP.
type TLS struct {
	CertFile     string `koanf:"cert_file" path:"file"`      // PEM certificate chain, leaf first; reloaded when it changes
	KeyFile      string `koanf:"key_file" path:"file"`       // PEM private key of the leaf
	ClientCAFile string `koanf:"client_ca_file" path:"file"` // PEM CAs that sign client certificates
	ClientAuth   string `koanf:"client_auth"`                // none, request or require
}

// The server.tls.client_auth values.
const (
	ClientAuthNone    = "none"    // ask for no client certificate
	ClientAuthRequest = "request" // verify one when given; a bad one fails the handshake
	ClientAuthRequire = "require" // demand a valid one
)

// Auth configures authentication.
type Auth struct {
	Disabled   bool          `koanf:"disabled"`
	Keys       []string      `koanf:"keys"` // plaintext or sha256:<hex>; secret
	RejectWith string        `koanf:"reject_with"`
	RPCTimeout time.Duration `koanf:"rpc_timeout"`
	Cache      Cache         `koanf:"cache"`
	Chains     Chains        `koanf:"chains"`
	Queue      Queue         `koanf:"queue"`

	// RuntimeKeys are the keys of agent runtimes, plaintext or
	// sha256:<hex> like Keys (secret): the built-in key plugins give their
	// holders the runtime role.
	RuntimeKeys []string `koanf:"runtime_keys"`

	FirstMessageTimeout       time.Duration `koanf:"first_message_timeout"`
	RevalidateOnReload        bool          `koanf:"revalidate_on_reload"`
	FailuresPerMinute         int           `koanf:"failures_per_minute"`
	UnauthenticatedPerAddress int           `koanf:"unauthenticated_per_address"`
}

// The auth.reject_with values.
const (
	RejectWithStatus = "status" // refuse the handshake with 401 / 503
	RejectWithClose  = "close"  // accept, then close with 4001
)

// Cache configures the authentication decision cache.
type Cache struct {
	Enabled    bool          `koanf:"enabled"`
	AllowTTL   time.Duration `koanf:"allow_ttl"`
	DenyTTL    time.Duration `koanf:"deny_ttl"`
	MaxEntries int           `koanf:"max_entries"`
}

// Queue bounds how authentications wait when a plugin is saturated: every
// process of it has plugins.max_in_flight calls in flight. A call then
// waits for a free slot, in arrival order, at most MaxWait, and only while
// fewer than Size calls (across every plugin) are waiting; past either, it
// fails at once and its request gets 503 with Retry-After.
type Queue struct {
	Size    int           `koanf:"size"`
	MaxWait time.Duration `koanf:"max_wait"`
}

// Chains lists, per route, the authenticator plugins in the order they run.
type Chains struct {
	Events  []string `koanf:"events"`
	REST    []string `koanf:"rest"`
	Runtime []string `koanf:"runtime"`
}

// Plugins configures where plugin binaries are found and how they run.
type Plugins struct {
	Dir     string  `koanf:"dir" path:"file"`
	Restart Restart `koanf:"restart"`
	// Processes is how many processes of each plugin run, each supervised
	// on its own; a crash fails only the calls in flight in the dead one.
	Processes int `koanf:"processes"`
	// MaxInFlight is how many calls one plugin process is given at once;
	// further calls wait in auth.queue.
	MaxInFlight int               `koanf:"max_in_flight"`
	Instances   map[string]Plugin `koanf:"instances"`
}

// Restart bounds how a crashed plugin is restarted.
type Restart struct {
	MaxAttempts    int           `koanf:"max_attempts"`
	InitialBackoff time.Duration `koanf:"initial_backoff"`
	MaxBackoff     time.Duration `koanf:"max_backoff"`
}

// Plugin is one authenticator plugin. Its name is its key in
// plugins.instances and the name chains use.
type Plugin struct {
	Path   string         `koanf:"path" path:"file"` // explicit binary path; default <dir>/auth-<name>
	SHA256 string         `koanf:"sha256"`           // optional pin, verified before every start
	Config map[string]any `koanf:"config"`           // handed to the plugin by the Configure RPC; may hold secrets
	// Processes and MaxInFlight override plugins.processes and
	// plugins.max_in_flight for this plugin; 0 keeps those.
	Processes   int `koanf:"processes"`
	MaxInFlight int `koanf:"max_in_flight"`
}

// Limits bounds what one client can cost.
type Limits struct {
	MaxFrameBytes              int           `koanf:"max_frame_bytes"`
	SubscribersPerConversation int           `koanf:"subscribers_per_conversation"`
	IdleTimeout                time.Duration `koanf:"idle_timeout"`
	PingInterval               time.Duration `koanf:"ping_interval"`
	SendQueueBytes             int           `koanf:"send_queue_bytes"`
	WriteTimeout               time.Duration `koanf:"write_timeout"`
	MaxBodyBytes               int64         `koanf:"max_body_bytes"`
	MaxEventBytes              int           `koanf:"max_event_bytes"`
	MessagesPerSecond          float64       `koanf:"messages_per_second"`
	MessageBurst               int           `koanf:"message_burst"`
}

// Conversations configures conversation actors.
type Conversations struct {
	IdleTimeout time.Duration `koanf:"idle_timeout"` // passivate an actor idle this long
	// RuntimeWait is how long a command that needs an agent runtime (run,
	// ask_agent, ...) waits for one to attach before it is refused; 0
	// refuses at once.
	RuntimeWait time.Duration `koanf:"runtime_wait"`
	// RuntimeReplyTimeout bounds how long a command the runtime answers
	// (ask_agent, condense, ...) waits for that answer.
	RuntimeReplyTimeout time.Duration `koanf:"runtime_reply_timeout"`
	// MaxForkEvents bounds how many events a fork copies (a fork is one
	// write to the store), and a branch fork's reads (core.BranchReach
	// times it); 0 is no limit.
	MaxForkEvents int `koanf:"max_fork_events"`
}

// Storage selects the event store.
type Storage struct {
	Driver   string   `koanf:"driver"`
	Path     string   `koanf:"path" path:"file"`
	Postgres Postgres `koanf:"postgres"`
}

// The storage.driver values.
const (
	DriverBolt     = "bolt"
	DriverPostgres = "postgres"
	DriverMemory   = "memory"
)

// Postgres configures storage.driver: postgres.
type Postgres struct {
	// DSN is a PostgreSQL connection string (URL or key=value), pool
	// settings included (pool_max_conns, ...). Its password is a secret.
	DSN string `koanf:"dsn"`
}

// Cluster configures cluster mode: several nodes sharing the PostgreSQL
// store, each conversation owned by one node at a time.
type Cluster struct {
	Enabled bool   `koanf:"enabled"`
	Name    string `koanf:"name"`
	// Bind is the host:port of this node's remote (gRPC) listener; Advertise
	// is what peers dial, defaulting to Bind.
	Bind      string `koanf:"bind"`
	Advertise string `koanf:"advertise"`
	// Provider is the membership provider: static, etcd or kubernetes.
	Provider            string        `koanf:"provider"`
	Static              ClusterStatic `koanf:"static"`
	Etcd                ClusterEtcd   `koanf:"etcd"`
	HeartbeatExpiration time.Duration `koanf:"heartbeat_expiration"`
	TLS                 ClusterTLS    `koanf:"tls"`
}

// The cluster.provider values.
const (
	ProviderStatic     = "static"
	ProviderEtcd       = "etcd"
	ProviderKubernetes = "kubernetes"
)

// ClusterStatic configures the static provider: a fixed list of peers.
type ClusterStatic struct {
	// Port is this node's membership port, on the host of cluster.bind.
	Port int `koanf:"port"`
	// Peers lists every node's membership host:port, this one's included.
	Peers []string `koanf:"peers"`
}

// ClusterEtcd configures the etcd provider.
type ClusterEtcd struct {
	Endpoints []string `koanf:"endpoints"`
	Username  string   `koanf:"username"`
	Password  string   `koanf:"password"` // secret
	// Prefix is the key prefix members register under.
	Prefix   string `koanf:"prefix"`
	CAFile   string `koanf:"ca_file" path:"file"`
	CertFile string `koanf:"cert_file" path:"file"`
	KeyFile  string `koanf:"key_file" path:"file"`
}

// ClusterTLS configures mutual TLS on the remote gRPC between nodes.
type ClusterTLS struct {
	CertFile string `koanf:"cert_file" path:"file"`
	KeyFile  string `koanf:"key_file" path:"file"`
	CAFile   string `koanf:"ca_file" path:"file"`
	// ServerName is the DNS name every node's certificate carries; peers
	// verify it instead of their changing addresses.
	ServerName string `koanf:"server_name"`
}

// Log configures the structured log.
type Log struct {
	Level  string `koanf:"level"`
	Format string `koanf:"format"`
}

// Admin configures the admin listener: /metrics, the health endpoints and,
// when asked, the profiles, on a port of their own so that none of them
// sits on the public one.
type Admin struct {
	// Addr is the admin listener's host:port; "" turns it off. Port 0
	// picks a free one (the log says which).
	Addr string `koanf:"addr"`
	// Pprof serves the Go runtime's profiles under /debug/pprof/.
	Pprof bool `koanf:"pprof"`
}

// Metrics configures the Prometheus metrics served on the admin listener.
type Metrics struct {
	Enabled bool `koanf:"enabled"`
}

// Audit configures the audit log of authentication decisions.
type Audit struct {
	// Sink is where the audit lines go: "stderr", "file:PATH" (a relative
	// PATH in a config file resolves against the file's directory; the
	// file is reopened on SIGHUP) or "off".
	Sink string `koanf:"sink"`
}

// The audit.sink values other than file:PATH.
const (
	AuditStderr = "stderr"
	AuditOff    = "off"
	// AuditFilePrefix starts audit.sink's file form, file:PATH.
	AuditFilePrefix = "file:"
)

// Tracing configures OpenTelemetry traces, exported over OTLP as the
// standard OTEL_* environment variables say.
type Tracing struct {
	Enabled bool `koanf:"enabled"`
}

// Default returns the documented defaults, the same as the root config.yaml.
func Default() Config {
	return Config{
		Server: Server{
			Addr:            "127.0.0.1:8000",
			ShutdownTimeout: 10 * time.Second,
			AllowedOrigins:  []string{},
			AccessLog:       true,
			// Long enough that a busy server never pays for it, short
			// enough that RSS falls soon after a burst of connections.
			ReleaseMemoryAfter: 5 * time.Second,
			// Half the collector's CPU of Go's 100, for a heap that may
			// grow to three times its live size instead of two (see
			// docs/benchmarks.md, "What the collector costs").
			GCPercent:      200,
			TrustedProxies: []string{},
			TLS:            TLS{ClientAuth: ClientAuthNone},
		},
		Auth: Auth{
			Keys:       []string{},
			RejectWith: RejectWithStatus,
			RPCTimeout: 500 * time.Millisecond,
			Cache: Cache{
				Enabled:    true,
				AllowTTL:   10 * time.Second,
				DenyTTL:    time.Second,
				MaxEntries: 100_000,
			},
			Chains: Chains{
				Events:  []string{"query", "header", "bearer", "subprotocol", "first_message"},
				REST:    []string{"header", "bearer"},
				Runtime: []string{"header", "bearer"},
			},
			RuntimeKeys:               []string{},
			Queue:                     Queue{Size: 16384, MaxWait: 5 * time.Second},
			FirstMessageTimeout:       10 * time.Second,
			FailuresPerMinute:         30,
			UnauthenticatedPerAddress: 16,
		},
		Plugins: Plugins{
			Dir: "./bin/plugins",
			Restart: Restart{
				MaxAttempts:    10,
				InitialBackoff: 100 * time.Millisecond,
				MaxBackoff:     10 * time.Second,
			},
			Processes:   2,
			MaxInFlight: 64,
			Instances:   map[string]Plugin{},
		},
		Limits: Limits{
			MaxFrameBytes:              64 << 10,
			SubscribersPerConversation: 50,
			IdleTimeout:                60 * time.Second,
			PingInterval:               20 * time.Second,
			SendQueueBytes:             1 << 20,
			WriteTimeout:               10 * time.Second,
			MaxBodyBytes:               1 << 20,
			// The OpenHands SDK's client (the websockets library's default)
			// refuses frames over 1 MiB.
			MaxEventBytes:     1 << 20,
			MessagesPerSecond: 20,
			MessageBurst:      40,
		},
		Conversations: Conversations{
			IdleTimeout: 5 * time.Minute,
			// Below the 30 s the OpenHands SDK gives its POST /run.
			RuntimeWait:         10 * time.Second,
			RuntimeReplyTimeout: time.Minute,
			// About 0.7 s of one write at the 70,000 events of 1 KiB a
			// second BenchmarkFork measures (bolt and postgres alike).
			MaxForkEvents: 50_000,
		},
		Storage: Storage{Driver: DriverBolt, Path: "./data/agent-server.db"},
		Cluster: Cluster{
			Name:                "agent-server",
			Bind:                "127.0.0.1:7420",
			Provider:            ProviderStatic,
			Static:              ClusterStatic{Port: 7421, Peers: []string{}},
			Etcd:                ClusterEtcd{Endpoints: []string{}, Prefix: "/agent-server"},
			HeartbeatExpiration: 10 * time.Second,
			TLS:                 ClusterTLS{ServerName: "agent-server.cluster"},
		},
		Log:     Log{Level: "info", Format: "text"},
		Admin:   Admin{Addr: "127.0.0.1:8001"},
		Metrics: Metrics{Enabled: true},
		Audit:   Audit{Sink: AuditStderr},
	}
}
