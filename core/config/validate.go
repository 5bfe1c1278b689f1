package config

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/agent-server/agent-server/core"
)

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
	if c.Auth.Cache.Enabled {
		positive("auth.cache.allow_ttl", c.Auth.Cache.AllowTTL)
		positive("auth.cache.deny_ttl", c.Auth.Cache.DenyTTL)
		if c.Auth.Cache.MaxEntries <= 0 {
			bad("auth.cache.max_entries", "must be positive, got %d", c.Auth.Cache.MaxEntries)
		}
	}
	for route, chain := range map[string][]string{"auth.chains.events": c.Auth.Chains.Events, "auth.chains.rest": c.Auth.Chains.REST} {
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
	case "bolt":
		if c.Storage.Path == "" {
			bad("storage.path", "must name the database file when storage.driver is bolt")
		}
	case "memory":
	default:
		bad("storage.driver", "want \"bolt\" or \"memory\", got %q", c.Storage.Driver)
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
