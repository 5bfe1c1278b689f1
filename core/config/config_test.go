package config

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The root config.yaml is the documented default: loading it must give
// exactly Default(), and it must mention every key.
func TestRootConfigIsTheDefault(t *testing.T) {
	root := filepath.Join("..", "..", "config.yaml")
	got, err := Load(Source{File: root, Environ: []string{}})
	if err != nil {
		t.Fatalf("load root config.yaml: %v", err)
	}
	// The file's relative paths resolve against its own directory, the
	// repository's root, which is where `go tool task run` starts.
	abs, err := filepath.Abs(filepath.Dir(root))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Plugins.Dir = filepath.Join(abs, want.Plugins.Dir)
	want.Storage.Path = filepath.Join(abs, want.Storage.Path)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config.yaml differs from Default():\n got %+v\nwant %+v", got, want)
	}
	text, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range Keys() {
		leaf := key[strings.LastIndex(strings.TrimSuffix(key, ".*"), ".")+1:]
		leaf = strings.TrimSuffix(leaf, ".*")
		if !strings.Contains(string(text), leaf+":") {
			t.Errorf("config.yaml does not document %s", key)
		}
	}
}

func TestLoadLayers(t *testing.T) {
	file := writeFile(t, "server:\n  addr: 127.0.0.1:9000\n  shutdown_timeout: 3s\nauth:\n  chains:\n    events: [header]\n")
	tests := []struct {
		name      string
		environ   []string
		overrides map[string]string
		check     func(t *testing.T, c Config)
	}{
		{"file", nil, nil, func(t *testing.T, c Config) {
			if c.Server.Addr != "127.0.0.1:9000" || c.Server.ShutdownTimeout != 3*time.Second {
				t.Errorf("got %s %s", c.Server.Addr, c.Server.ShutdownTimeout)
			}
			if !reflect.DeepEqual(c.Auth.Chains.Events, []string{"header"}) {
				t.Errorf("events chain = %v, want [header] (a list replaces, never merges)", c.Auth.Chains.Events)
			}
			if !reflect.DeepEqual(c.Auth.Chains.REST, []string{"header", "bearer"}) {
				t.Errorf("rest chain = %v, want the default", c.Auth.Chains.REST)
			}
		}},
		{"env beats file", []string{"AGENT_SERVER_SERVER__ADDR=127.0.0.1:9100", "AGENT_SERVER_AUTH__CHAINS__EVENTS=bearer,header", "AGENT_SERVER_LIMITS__IDLE_TIMEOUT=2m"}, nil, func(t *testing.T, c Config) {
			if c.Server.Addr != "127.0.0.1:9100" {
				t.Errorf("addr = %s", c.Server.Addr)
			}
			if !reflect.DeepEqual(c.Auth.Chains.Events, []string{"bearer", "header"}) {
				t.Errorf("events = %v", c.Auth.Chains.Events)
			}
			if c.Limits.IdleTimeout != 2*time.Minute {
				t.Errorf("idle = %s", c.Limits.IdleTimeout)
			}
		}},
		{"flags beat env", []string{"AGENT_SERVER_SERVER__ADDR=127.0.0.1:9100"}, map[string]string{"server.addr": "127.0.0.1:9200"}, func(t *testing.T, c Config) {
			if c.Server.Addr != "127.0.0.1:9200" {
				t.Errorf("addr = %s", c.Server.Addr)
			}
		}},
		{"other prefixes ignored", []string{"SERVER__ADDR=nope", "AGENT_SERVERX=1"}, nil, func(t *testing.T, c Config) {
			if c.Server.Addr != "127.0.0.1:9000" {
				t.Errorf("addr = %s", c.Server.Addr)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			environ := tt.environ
			if environ == nil {
				environ = []string{}
			}
			c, err := Load(Source{File: file, Environ: environ, Overrides: tt.overrides})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// Every bad config names the key at fault.
func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		environ []string
		want    string
	}{
		{"unknown top key", "bogus: 1\n", nil, "unknown key bogus"},
		{"unknown nested key", "server:\n  adr: x\n", nil, "unknown key server.adr"},
		{"unknown env key", "", []string{"AGENT_SERVER_SERVER__PORT=1"}, "unknown key server.port"},
		{"bad duration", "auth:\n  rpc_timeout: fast\n", nil, "auth.rpc_timeout"},
		{"negative duration", "auth:\n  rpc_timeout: -1s\n", nil, "auth.rpc_timeout"},
		{"bad addr", "server:\n  addr: nowhere\n", nil, "server.addr"},
		{"negative release", "server:\n  release_memory_after: -1s\n", nil, "server.release_memory_after"},
		{"negative gc percent", "server:\n  gc_percent: -1\n", nil, "server.gc_percent"},
		{"bad reject_with", "auth:\n  reject_with: drop\n", nil, "auth.reject_with"},
		{"bad key hash", "auth:\n  keys: ['sha256:abc']\n", nil, "auth.keys"},
		{"bad runtime key hash", "auth:\n  runtime_keys: ['sha256:abc']\n", nil, "auth.runtime_keys"},
		{"runtime key is a client key", "auth:\n  keys: [k1, k2]\n  runtime_keys: ['sha256:" + sha256Hex("k2") + "']\n", nil, "auth.runtime_keys[0]: is also in auth.keys"},
		{"first_message in the runtime chain", "auth:\n  chains:\n    runtime: [header, first_message]\n", nil, "auth.chains.runtime[1]"},
		{"empty runtime chain", "auth:\n  chains:\n    runtime: []\n", nil, "auth.chains.runtime"},
		{"negative runtime wait", "conversations:\n  runtime_wait: -1s\n", nil, "conversations.runtime_wait"},
		{"zero reply timeout", "conversations:\n  runtime_reply_timeout: 0s\n", nil, "conversations.runtime_reply_timeout"},
		{"negative fork limit", "conversations:\n  max_fork_events: -1\n", nil, "conversations.max_fork_events"},
		{"empty chain", "auth:\n  chains:\n    rest: []\n", nil, "auth.chains.rest"},
		{"duplicate plugin", "auth:\n  chains:\n    events: [query, query]\n", nil, "auth.chains.events"},
		{"bad plugin name", "auth:\n  chains:\n    events: ['../x']\n", nil, "auth.chains.events"},
		{"bad pin", "plugins:\n  instances:\n    jwt:\n      sha256: xyz\n", nil, "plugins.instances.jwt.sha256"},
		{"unknown plugin field", "plugins:\n  instances:\n    jwt:\n      sha: x\n", nil, "unknown key plugins.instances[jwt].sha"},
		{"no plugin processes", "plugins:\n  processes: 0\n", nil, "plugins.processes"},
		{"too many plugin processes", "plugins:\n  processes: 17\n", nil, "plugins.processes"},
		{"negative instance processes", "plugins:\n  instances:\n    jwt:\n      processes: -1\n", nil, "plugins.instances.jwt.processes"},
		{"no call slots", "plugins:\n  max_in_flight: 0\n", nil, "plugins.max_in_flight"},
		{"negative instance slots", "plugins:\n  instances:\n    jwt:\n      max_in_flight: -2\n", nil, "plugins.instances.jwt.max_in_flight"},
		{"negative queue", "auth:\n  queue:\n    size: -1\n", nil, "auth.queue.size"},
		{"zero queue wait", "auth:\n  queue:\n    max_wait: 0s\n", nil, "auth.queue.max_wait"},
		{"queue wait past a chain run", "auth:\n  queue:\n    max_wait: 10s\n", nil, "auth.queue.max_wait"},
		{"ping above idle", "limits:\n  ping_interval: 2m\n", nil, "limits.ping_interval"},
		{"tiny frame", "limits:\n  max_frame_bytes: 10\n", nil, "limits.max_frame_bytes"},
		{"bad origin", "server:\n  allowed_origins: [example.com]\n", nil, "server.allowed_origins[0]"},
		{"bad driver", "storage:\n  driver: mysql\n", nil, "storage.driver"},
		{"bad log level", "log:\n  level: loud\n", nil, "log.level"},
		{"tls cert without key", "server:\n  tls:\n    cert_file: a.crt\n", nil, "server.tls.key_file"},
		{"tls key without cert", "server:\n  tls:\n    key_file: a.key\n", nil, "server.tls.cert_file"},
		{"bad client_auth", "server:\n  tls:\n    client_auth: maybe\n", nil, "server.tls.client_auth"},
		{"client_auth without tls", "server:\n  tls:\n    client_auth: require\n    client_ca_file: ca.pem\n", nil, "server.tls.client_auth"},
		{"client_auth without CAs", "server:\n  tls:\n    cert_file: a.crt\n    key_file: a.key\n    client_auth: request\n", nil, "server.tls.client_ca_file"},
		{"client CAs unused", "server:\n  tls:\n    cert_file: a.crt\n    key_file: a.key\n    client_ca_file: ca.pem\n", nil, "server.tls.client_ca_file"},
		{"bad admin addr", "admin:\n  addr: nowhere\n", nil, "admin.addr"},
		{"pprof without admin", "admin:\n  addr: ''\n  pprof: true\n", nil, "admin.pprof"},
		{"bad audit sink", "audit:\n  sink: syslog\n", nil, "audit.sink"},
		{"audit file without path", "audit:\n  sink: 'file:'\n", nil, "audit.sink"},
		{"wrong type", "limits:\n  max_frame_bytes: [1]\n", nil, "limits.max_frame_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			environ := tt.environ
			if environ == nil {
				environ = []string{}
			}
			_, err := Load(Source{File: writeFile(t, tt.yaml), Environ: environ})
			if err == nil {
				t.Fatalf("Load accepted a bad config; want an error naming %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to name %q", err, tt.want)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(Source{File: filepath.Join(t.TempDir(), "nope.yaml"), Environ: []string{}})
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v, want one naming the file", err)
	}
}

// Secrets never reach the rendered config, even in a bad key's error.
func TestSecretsMasked(t *testing.T) {
	c := Default()
	c.Auth.Keys = []string{"s3cret-key", "sha256:" + strings.Repeat("ab", 32)}
	c.Auth.RuntimeKeys = []string{"runtime-s3cret"}
	c.Plugins.Instances = map[string]Plugin{"jwt": {Config: map[string]any{"secret": "jwt-s3cret", "issuer": "me"}}}
	out, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"s3cret-key", "jwt-s3cret", strings.Repeat("ab", 32), "runtime-s3cret"} {
		if strings.Contains(out, secret) {
			t.Errorf("rendered config contains secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "issuer: me") {
		t.Errorf("rendered config lost a non-secret plugin setting:\n%s", out)
	}

	_, err = Load(Source{File: writeFile(t, "auth:\n  keys: ['']\n"), Environ: []string{}})
	if err == nil {
		t.Fatal("empty key accepted")
	}
	for _, bad := range []string{
		"auth:\n  keys: ['sha256:zz-my-secret']\n",
		"auth:\n  rpc_timeout: my-secret\n",
		"auth:\n  keys:\n    - {k: my-secret}\n",
		"limits:\n  max_frame_bytes: my-secret\n",
	} {
		_, err = Load(Source{File: writeFile(t, bad), Environ: []string{}})
		if err == nil || strings.Contains(err.Error(), "my-secret") {
			t.Errorf("error %v must refuse the value without quoting it", err)
		}
	}
}

// Relative paths in a config file resolve against the file's directory;
// the same keys from the environment or a flag stay relative to the
// working directory; absolute paths and plugin config maps are untouched.
func TestRelativePathsResolveAgainstTheFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "config.yaml")
	body := "plugins:\n  dir: ./plugins\n  instances:\n    team:\n      path: ../lib/auth-team\n      config:\n        keyfile: ./team.keys\n" +
		"storage:\n  path: data/agent-server.db\naudit:\n  sink: file:log/audit.log\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		environ   []string
		overrides map[string]string
		get       func(c Config) any
		want      any
	}{
		{"plugins.dir from the file", nil, nil, func(c Config) any { return c.Plugins.Dir }, filepath.Join(abs, "plugins")},
		{"an instance's path from the file", nil, nil, func(c Config) any { return c.Plugins.Instances["team"].Path }, filepath.Join(filepath.Dir(abs), "lib", "auth-team")},
		{"storage.path from the file", nil, nil, func(c Config) any { return c.Storage.Path }, filepath.Join(abs, "data", "agent-server.db")},
		{"audit.sink's file: path from the file", nil, nil, func(c Config) any { return c.Audit.Sink }, "file:" + filepath.Join(abs, "log", "audit.log")},
		{"audit.sink from the environment stays relative", []string{"AGENT_SERVER_AUDIT__SINK=file:rel/audit.log"}, nil, func(c Config) any { return c.Audit.Sink }, "file:rel/audit.log"},
		{"an absolute audit.sink stays", []string{"AGENT_SERVER_AUDIT__SINK=file:/var/log/a.log"}, nil, func(c Config) any { return c.Audit.Sink }, "file:/var/log/a.log"},
		{"a plugin's own config is opaque", nil, nil, func(c Config) any { return c.Plugins.Instances["team"].Config["keyfile"] }, "./team.keys"},
		{"environment stays relative", []string{"AGENT_SERVER_STORAGE__PATH=rel/x.db"}, nil, func(c Config) any { return c.Storage.Path }, "rel/x.db"},
		{"a flag stays relative", nil, map[string]string{"plugins.dir": "bin/p"}, func(c Config) any { return c.Plugins.Dir }, "bin/p"},
		{"absolute stays", []string{"AGENT_SERVER_PLUGINS__DIR=/opt/p"}, nil, func(c Config) any { return c.Plugins.Dir }, "/opt/p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			environ := tt.environ
			if environ == nil {
				environ = []string{}
			}
			c, err := Load(Source{File: file, Environ: environ, Overrides: tt.overrides})
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	// Every path key is resolved; a new one is added here on purpose.
	want := []string{"server.tls.cert_file", "server.tls.key_file", "server.tls.client_ca_file", "plugins.dir", "plugins.instances.*.path", "storage.path",
		"cluster.etcd.ca_file", "cluster.etcd.cert_file", "cluster.etcd.key_file",
		"cluster.tls.cert_file", "cluster.tls.key_file", "cluster.tls.ca_file"}
	if got := PathKeys(); !reflect.DeepEqual(got, want) {
		t.Errorf("PathKeys() = %v, want %v", got, want)
	}
}

// A DSN's password never survives MaskDSN, in any form a DSN takes.
func TestMaskDSN(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"postgres://app:s3cr%40t@db:5432/agent?sslmode=verify-full", "postgres://app:***@db:5432/agent?sslmode=verify-full"},
		{"postgresql://app@db/agent", "postgresql://app@db/agent"},
		{"postgres://db/agent?user=app&password=s3cret&pool_max_conns=8", "postgres://db/agent?password=***&pool_max_conns=8&user=app"},
		{"host=db user=app password=s3cret dbname=agent", "host=db user=app password=*** dbname=agent"},
		{"host=db password = 's3 cr\\'et' dbname=agent", "host=db password = *** dbname=agent"},
		{"host=db PASSWORD=s3cret", "host=db PASSWORD=***"},
		{"postgres://app:s3cret@[::1", "***"},
	}
	for _, tt := range tests {
		got := MaskDSN(tt.in)
		if got != tt.want {
			t.Errorf("MaskDSN(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(got, "s3cr") || strings.Contains(got, "cr%40t") {
			t.Errorf("MaskDSN(%q) = %q still holds the password", tt.in, got)
		}
	}
}

// Cluster mode's keys are checked only when it is on, each error naming
// its key; plaintext on a non-loopback address is a warning.
func TestClusterValidation(t *testing.T) {
	base := "storage:\n  driver: postgres\n  postgres:\n    dsn: postgres://db/x\ncluster:\n  enabled: true\n  static:\n    peers: [127.0.0.1:7421]\n"
	tests := []struct {
		name    string
		yaml    string
		wantErr string // "" for valid
		warn    string // a substring of a warning, "" for none expected about plaintext
	}{
		{"valid static on loopback", base, "", ""},
		{"bolt refused", "cluster:\n  enabled: true\n  static:\n    peers: [127.0.0.1:7421]\n", "cluster.enabled: cluster mode needs storage.driver: postgres", ""},
		{"off: nothing checked", "cluster:\n  provider: nonsense\n", "", ""},
		{"bad provider", base + "  provider: consul\n", "cluster.provider", ""},
		{"static needs peers", strings.Replace(base, "[127.0.0.1:7421]", "[]", 1), "cluster.static.peers", ""},
		{"etcd needs endpoints", base + "  provider: etcd\n", "cluster.etcd.endpoints", ""},
		{"wildcard bind needs advertise", base + "  bind: 0.0.0.0:7420\n", "cluster.advertise", ""},
		{"tls all or none", base + "  tls:\n    cert_file: /c.pem\n", "cluster.tls", ""},
		{"bad name", base + "  name: Agent_Server\n", "cluster.name", ""},
		{"short heartbeat", base + "  heartbeat_expiration: 100ms\n", "cluster.heartbeat_expiration", ""},
		{"plaintext off loopback", base + "  bind: 10.1.2.3:7420\n", "", "plaintext on 10.1.2.3:7420"},
		{"bad trusted proxy", "server:\n  trusted_proxies: [10.0.0.0/33]\n", "server.trusted_proxies[0]", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(Source{File: writeFile(t, tt.yaml), Environ: []string{}})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
			case err != nil:
				return
			}
			warnings := strings.Join(c.Warnings(), "\n")
			if tt.warn != "" && !strings.Contains(warnings, tt.warn) {
				t.Errorf("warnings = %q, want %q", warnings, tt.warn)
			}
			if tt.warn == "" && strings.Contains(warnings, "plaintext") {
				t.Errorf("unexpected plaintext warning: %q", warnings)
			}
			if c.Cluster.Enabled && c.Cluster.Provider == ProviderStatic && !strings.Contains(warnings, "unauthenticated HTTP") {
				t.Errorf("the static provider's exposure is not said: %q", warnings)
			}
		})
	}
}

func sha256Hex(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// ChangedKeys names each changed value by its key, a map as a whole, and
// nothing at or below a skipped key.
func TestChangedKeys(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		skip   map[string]bool
		want   []string
	}{
		{"nothing", func(*Config) {}, nil, nil},
		{"a leaf in a nested struct", func(c *Config) { c.Auth.Queue.MaxWait++ }, nil, []string{"auth.queue.max_wait"}},
		{"a duration and a slice", func(c *Config) { c.Server.ShutdownTimeout++; c.Auth.Keys = []string{"k"} }, nil, []string{"server.shutdown_timeout", "auth.keys"}},
		{"a map as a whole", func(c *Config) { c.Plugins.Instances = map[string]Plugin{"x": {}} }, nil, []string{"plugins.instances"}},
		{"a skipped leaf", func(c *Config) { c.Auth.Keys = []string{"k"} }, map[string]bool{"auth.keys": true}, nil},
		{"below a skipped struct", func(c *Config) { c.Auth.Queue.Size++ }, map[string]bool{"auth.queue": true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Default()
			tt.change(&b)
			if got := ChangedKeys(Default(), b, tt.skip); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ChangedKeys = %v, want %v", got, tt.want)
			}
		})
	}
}
