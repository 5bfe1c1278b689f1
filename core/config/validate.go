package config

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/agent-server/agent-server/core"
)

// MaxProcesses bounds plugins.processes and its per-plugin override.
const MaxProcesses = 16

// maxQueueWait bounds auth.queue.max_wait: a whole chain run has 10 s.
const maxQueueWait = 10 * time.Second

// pluginName is what a plugin may be called: it becomes a file name.
var pluginName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// Validate checks values that decoding cannot. Each error names its key.
func (c *Config) Validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	if _, _, err := net.SplitHostPort(c.Server.Addr); err != nil {
		bad("server.addr", "want host:port, got %q", c.Server.Addr)
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be a positive duration, got %s", d)
		}
	}
	positive("server.shutdown_timeout", c.Server.ShutdownTimeout)
	if c.Server.ReleaseMemoryAfter < 0 {
		bad("server.release_memory_after", "must be 0 (never) or a positive duration, got %s", c.Server.ReleaseMemoryAfter)
	}
	if c.Server.GCPercent < 0 {
		bad("server.gc_percent", "must be 0 (Go's default) or a positive percent, got %d", c.Server.GCPercent)
	}
	c.Server.TLS.validate(bad)
	positive("auth.rpc_timeout", c.Auth.RPCTimeout)
	positive("limits.idle_timeout", c.Limits.IdleTimeout)
	positive("limits.ping_interval", c.Limits.PingInterval)
	positive("limits.write_timeout", c.Limits.WriteTimeout)
	positive("plugins.restart.initial_backoff", c.Plugins.Restart.InitialBackoff)
	positive("plugins.restart.max_backoff", c.Plugins.Restart.MaxBackoff)
	if c.Limits.PingInterval >= c.Limits.IdleTimeout && c.Limits.IdleTimeout > 0 {
		bad("limits.ping_interval", "must be shorter than limits.idle_timeout (%s)", c.Limits.IdleTimeout)
	}
	for i, o := range c.Server.AllowedOrigins {
		if o != "*" && !strings.Contains(o, "://") {
			bad(fmt.Sprintf("server.allowed_origins[%d]", i), "want scheme://host[:port] or *, got %q", o)
		}
	}
	switch c.Auth.RejectWith {
	case RejectWithStatus, RejectWithClose:
	default:
		bad("auth.reject_with", "want %q or %q, got %q", RejectWithStatus, RejectWithClose, c.Auth.RejectWith)
	}
	if _, err := core.NewKeySet(c.Auth.Keys); err != nil {
		bad("auth.keys", "%v", err)
	}
	if _, err := core.NewKeySet(c.Auth.RuntimeKeys); err != nil {
		bad("auth.runtime_keys", "%v", err)
	} else if i, ok := core.SharedKey(c.Auth.Keys, c.Auth.RuntimeKeys); ok {
		bad(fmt.Sprintf("auth.runtime_keys[%d]", i), "is also in auth.keys; a runtime key must differ from every client key")
	}
	if c.Auth.Cache.Enabled {
		positive("auth.cache.allow_ttl", c.Auth.Cache.AllowTTL)
		positive("auth.cache.deny_ttl", c.Auth.Cache.DenyTTL)
		if c.Auth.Cache.MaxEntries <= 0 {
			bad("auth.cache.max_entries", "must be positive, got %d", c.Auth.Cache.MaxEntries)
		}
	}
	for route, chain := range map[string][]string{"auth.chains.events": c.Auth.Chains.Events, "auth.chains.rest": c.Auth.Chains.REST, "auth.chains.runtime": c.Auth.Chains.Runtime} {
		if len(chain) == 0 && !c.Auth.Disabled {
			bad(route, "must list at least one plugin")
		}
		seen := map[string]bool{}
		for _, name := range chain {
			if !pluginName.MatchString(name) {
				bad(route, "plugin name %q must match %s", name, pluginName)
			}
			if seen[name] {
				bad(route, "plugin %q listed twice", name)
			}
			seen[name] = true
		}
	}
	for name, p := range c.Plugins.Instances {
		key := "plugins.instances." + name
		if !pluginName.MatchString(name) {
			bad(key, "plugin name must match %s", pluginName)
		}
		if p.SHA256 != "" && !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(p.SHA256) {
			bad(key+".sha256", "want 64 lower-case hex digits")
		}
		if p.Processes < 0 || p.Processes > MaxProcesses {
			bad(key+".processes", "want 0 (plugins.processes) to %d, got %d", MaxProcesses, p.Processes)
		}
		if p.MaxInFlight < 0 {
			bad(key+".max_in_flight", "must not be negative (0 is plugins.max_in_flight), got %d", p.MaxInFlight)
		}
	}
	if c.Plugins.Processes < 1 || c.Plugins.Processes > MaxProcesses {
		bad("plugins.processes", "want 1 to %d, got %d", MaxProcesses, c.Plugins.Processes)
	}
	if c.Plugins.MaxInFlight < 1 {
		bad("plugins.max_in_flight", "must be at least 1, got %d", c.Plugins.MaxInFlight)
	}
	if c.Auth.Queue.Size < 0 {
		bad("auth.queue.size", "must not be negative (0 refuses at once when every slot is busy), got %d", c.Auth.Queue.Size)
	}
	if c.Auth.Queue.MaxWait <= 0 || c.Auth.Queue.MaxWait >= maxQueueWait {
		bad("auth.queue.max_wait", "want a positive duration below %s (the bound of a whole chain run), got %s", maxQueueWait, c.Auth.Queue.MaxWait)
	}
	if c.Plugins.Dir == "" {
		bad("plugins.dir", "must not be empty")
	}
	if c.Plugins.Restart.MaxAttempts < 0 {
		bad("plugins.restart.max_attempts", "must not be negative")
	}
	if c.Limits.MaxFrameBytes < 1024 {
		bad("limits.max_frame_bytes", "must be at least 1024, got %d", c.Limits.MaxFrameBytes)
	}
	if c.Limits.SubscribersPerConversation < 1 {
		bad("limits.subscribers_per_conversation", "must be at least 1")
	}
	if c.Limits.SendQueueBytes < c.Limits.MaxFrameBytes {
		bad("limits.send_queue_bytes", "must be at least limits.max_frame_bytes (%d)", c.Limits.MaxFrameBytes)
	}
	if c.Limits.MaxBodyBytes < 1024 {
		bad("limits.max_body_bytes", "must be at least 1024")
	}
	if c.Limits.MaxEventBytes < 1024 {
		bad("limits.max_event_bytes", "must be at least 1024, got %d", c.Limits.MaxEventBytes)
	}
	positive("auth.first_message_timeout", c.Auth.FirstMessageTimeout)
	positive("conversations.idle_timeout", c.Conversations.IdleTimeout)
	if c.Conversations.RuntimeWait < 0 {
		bad("conversations.runtime_wait", "must be 0 (refuse at once) or a positive duration, got %s", c.Conversations.RuntimeWait)
	}
	positive("conversations.runtime_reply_timeout", c.Conversations.RuntimeReplyTimeout)
	if c.Conversations.MaxForkEvents < 0 {
		bad("conversations.max_fork_events", "must be 0 (no limit) or positive, got %d", c.Conversations.MaxForkEvents)
	}
	for i, name := range c.Auth.Chains.Runtime {
		if name == core.FirstMessageAuthenticator {
			bad(fmt.Sprintf("auth.chains.runtime[%d]", i), "%s reads a client's first frame and cannot authenticate a runtime; use header or bearer", name)
		}
	}
	if c.Auth.FailuresPerMinute < 0 {
		bad("auth.failures_per_minute", "must not be negative (0 turns the limit off)")
	}
	if c.Auth.UnauthenticatedPerAddress < 1 {
		bad("auth.unauthenticated_per_address", "must be at least 1")
	}
	if c.Limits.MessagesPerSecond < 0 {
		bad("limits.messages_per_second", "must not be negative (0 turns the limit off)")
	}
	if c.Limits.MessagesPerSecond > 0 && c.Limits.MessageBurst < 1 {
		bad("limits.message_burst", "must be at least 1")
	}
	switch c.Storage.Driver {
	case DriverBolt:
		if c.Storage.Path == "" {
			bad("storage.path", "must name the database file when storage.driver is bolt")
		}
	case DriverPostgres:
		if c.Storage.Postgres.DSN == "" {
			bad("storage.postgres.dsn", "must be set when storage.driver is postgres (or AGENT_SERVER_STORAGE__POSTGRES__DSN)")
		}
	case DriverMemory:
	default:
		bad("storage.driver", "want %q, %q or %q, got %q", DriverBolt, DriverPostgres, DriverMemory, c.Storage.Driver)
	}
	for i, p := range c.Server.TrustedProxies {
		if _, err := ParseTrusted(p); err != nil {
			bad(fmt.Sprintf("server.trusted_proxies[%d]", i), "%v", err)
		}
	}
	c.validateCluster(bad)
	if c.Admin.Addr != "" {
		if _, _, err := splitHostPort(c.Admin.Addr); err != nil {
			bad("admin.addr", "want host:port, or empty to turn the admin listener off, got %q", c.Admin.Addr)
		}
	} else if c.Admin.Pprof {
		bad("admin.pprof", "needs the admin listener: set admin.addr")
	}
	switch sink := c.Audit.Sink; {
	case sink == AuditStderr, sink == AuditOff:
	case strings.HasPrefix(sink, AuditFilePrefix):
		if strings.TrimPrefix(sink, AuditFilePrefix) == "" {
			bad("audit.sink", "file: needs a path, as file:/var/log/agent-server/audit.log")
		}
	default:
		bad("audit.sink", "want stderr, off or file:PATH, got %q", sink)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "want text or json, got %q", c.Log.Format)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// clusterName is what cluster.name may be: it becomes an etcd key part and
// a Kubernetes label value.
var clusterName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validateCluster checks the cluster.* keys when cluster mode is on.
func (c *Config) validateCluster(bad func(key, format string, args ...any)) {
	cl := c.Cluster
	if !cl.Enabled {
		return
	}
	if c.Storage.Driver != DriverPostgres {
		bad("cluster.enabled", "cluster mode needs storage.driver: postgres (the nodes share it as the record), got %q", c.Storage.Driver)
	}
	if !clusterName.MatchString(cl.Name) {
		bad("cluster.name", "want lower-case letters, digits and '-' (at most 63), got %q", cl.Name)
	}
	host, port, err := splitHostPort(cl.Bind)
	switch {
	case err != nil:
		bad("cluster.bind", "want host:port, got %q", cl.Bind)
	case port == 0 && cl.Advertise != "":
		bad("cluster.bind", "port 0 picks a free port, which cluster.advertise cannot name")
	case isUnspecified(host) && cl.Advertise == "":
		bad("cluster.advertise", "must be set when cluster.bind listens on every interface (%s): peers need an address they can dial", cl.Bind)
	}
	if cl.Advertise != "" {
		if h, p, err := splitHostPort(cl.Advertise); err != nil || p == 0 || isUnspecified(h) {
			bad("cluster.advertise", "want the host:port peers dial, got %q", cl.Advertise)
		}
	}
	switch cl.Provider {
	case ProviderStatic:
		if cl.Static.Port < 1 || cl.Static.Port > 65535 {
			bad("cluster.static.port", "want a port from 1 to 65535, got %d", cl.Static.Port)
		}
		if len(cl.Static.Peers) == 0 {
			bad("cluster.static.peers", "must list every node's membership host:port, this one's included")
		}
		for i, p := range cl.Static.Peers {
			if _, port, err := splitHostPort(p); err != nil || port == 0 {
				bad(fmt.Sprintf("cluster.static.peers[%d]", i), "want host:port, got %q", p)
			}
		}
	case ProviderEtcd:
		if len(cl.Etcd.Endpoints) == 0 {
			bad("cluster.etcd.endpoints", "must list at least one etcd endpoint")
		}
		if (cl.Etcd.CertFile == "") != (cl.Etcd.KeyFile == "") {
			bad("cluster.etcd.cert_file", "cert_file and key_file go together")
		}
	case ProviderKubernetes:
	default:
		bad("cluster.provider", "want %q, %q or %q, got %q", ProviderStatic, ProviderEtcd, ProviderKubernetes, cl.Provider)
	}
	if cl.HeartbeatExpiration < time.Second {
		bad("cluster.heartbeat_expiration", "must be at least 1s, got %s", cl.HeartbeatExpiration)
	}
	if set := btoi(cl.TLS.CertFile != "") + btoi(cl.TLS.KeyFile != "") + btoi(cl.TLS.CAFile != ""); set != 0 && set != 3 {
		bad("cluster.tls", "cert_file, key_file and ca_file go together (mutual TLS between nodes)")
	}
	if cl.TLS.CertFile != "" && cl.TLS.ServerName == "" {
		bad("cluster.tls.server_name", "must name the DNS name every node's certificate carries")
	}
}

// Warnings lists what is valid but worth an operator's attention: config
// check prints them, and serve logs them at start.
func (c Config) Warnings() []string {
	var out []string
	cl := c.Cluster
	if !cl.Enabled {
		return out
	}
	if cl.TLS.CertFile == "" {
		for _, a := range []string{cl.Bind, cl.Advertise} {
			if h, _, err := splitHostPort(a); err == nil && a != "" && !isLoopback(h) {
				out = append(out, fmt.Sprintf("cluster: nodes talk in plaintext on %s, which is not a loopback address: set cluster.tls.cert_file, key_file and ca_file (mutual TLS); without it anyone who reaches the port can send nodes messages", a))
				break
			}
		}
	}
	if cl.Provider == ProviderStatic {
		host, _, _ := splitHostPort(cl.Bind)
		out = append(out, fmt.Sprintf("cluster: the static provider's membership endpoint listens on %s:%d over plain, unauthenticated HTTP; it answers GET /_health with this node's member ID, cluster name, remote address and port and actor kinds (nothing else), and polls its peers the same way: keep that port on the nodes' private network", host, cl.Static.Port))
	}
	return out
}

// ParseTrusted reads one server.trusted_proxies entry: a CIDR, or a single
// IP address.
func ParseTrusted(s string) (*net.IPNet, error) {
	if _, n, err := net.ParseCIDR(s); err == nil {
		return n, nil
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, fmt.Errorf("want a CIDR such as 10.0.0.0/8 or an IP address, got %q", s)
	}
	bits := 32
	if ip.To4() == nil {
		bits = 128
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
}

func splitHostPort(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port %q", port)
	}
	return host, p, nil
}

func isUnspecified(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// validate checks server.tls: cert and key together, and client
// certificates only over TLS and with the CAs that sign them.
func (t TLS) validate(bad func(key, format string, args ...any)) {
	on := t.CertFile != "" || t.KeyFile != ""
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		bad("server.tls.key_file", "must be set with server.tls.cert_file")
	case t.KeyFile != "" && t.CertFile == "":
		bad("server.tls.cert_file", "must be set with server.tls.key_file")
	}
	switch t.ClientAuth {
	case ClientAuthNone:
		if t.ClientCAFile != "" {
			bad("server.tls.client_ca_file", "is set but server.tls.client_auth is none: set it to request or require")
		}
	case ClientAuthRequest, ClientAuthRequire:
		if !on {
			bad("server.tls.client_auth", "%s needs server.tls.cert_file and server.tls.key_file", t.ClientAuth)
		}
		if t.ClientCAFile == "" {
			bad("server.tls.client_ca_file", "must name the CAs that sign client certificates when server.tls.client_auth is %s", t.ClientAuth)
		}
	default:
		bad("server.tls.client_auth", "want none, request or require, got %q", t.ClientAuth)
	}
}
