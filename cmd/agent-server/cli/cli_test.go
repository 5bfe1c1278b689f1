package cli

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/core/config"
)

func TestSessionKeys(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	tests := []struct {
		name      string
		cfgKeys   []string
		disabled  bool
		getenv    func(string) string
		want      []string // nil with generated=true means one random key
		generated bool
		wantErr   string
	}{
		{name: "config only", cfgKeys: []string{"a"}, getenv: env(), want: []string{"a"}},
		{name: "config and env", cfgKeys: []string{"a"}, getenv: env("SESSION_API_KEY", "b"), want: []string{"a", "b"}},
		{name: "env json list", getenv: env("OH_SESSION_API_KEYS", `["x","y"]`), want: []string{"x", "y"}},
		{name: "none generates one", getenv: env(), generated: true},
		{name: "none but disabled", disabled: true, getenv: env(), want: nil},
		{name: "bad env list", getenv: env("OH_SESSION_API_KEYS", "not-json-secret"), wantErr: "OH_SESSION_API_KEYS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Auth.Keys, cfg.Auth.Disabled = tt.cfgKeys, tt.disabled
			var out bytes.Buffer
			got, err := sessionKeys(cfg, tt.getenv, &out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "not-json-secret") {
					t.Errorf("error quotes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.generated {
				if len(got) != 1 || len(got[0]) < 40 {
					t.Fatalf("generated %q, want one long random key", got)
				}
				if !strings.Contains(out.String(), got[0]) {
					t.Errorf("the generated key was not printed:\n%s", out.String())
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("keys = %q, want %q", got, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("printed a banner although keys were configured: %s", out.String())
			}
		})
	}
}

func TestRestartOnly(t *testing.T) {
	base := config.Default()
	tests := []struct {
		name   string
		change func(*config.Config)
		want   []string
	}{
		{"keys reload live", func(c *config.Config) { c.Auth.Keys = []string{"new"} }, nil},
		{"plugin config reloads live", func(c *config.Config) {
			c.Plugins.Instances = map[string]config.Plugin{"jwt": {Config: map[string]any{"secret": "x"}}}
		}, nil},
		{"runtime keys reload live", func(c *config.Config) { c.Auth.RuntimeKeys = []string{"rt"} }, nil},
		{"revalidation is read at each reload", func(c *config.Config) { c.Auth.RevalidateOnReload = !c.Auth.RevalidateOnReload }, nil},
		{"addr needs a restart", func(c *config.Config) { c.Server.Addr = "127.0.0.1:1" }, []string{"server.addr"}},
		{"chains need a restart", func(c *config.Config) { c.Auth.Chains.Events = []string{"header"} }, []string{"auth.chains.events"}},
		// Auth keys beside the live ones were reported as nothing before:
		// a reload said "config reloaded" and applied none of them.
		{"the rest of auth needs a restart", func(c *config.Config) {
			c.Auth.RPCTimeout *= 2
			c.Auth.RejectWith = config.RejectWithClose
			c.Auth.Queue.Size++
			c.Auth.FailuresPerMinute++
		}, []string{"auth.reject_with", "auth.rpc_timeout", "auth.queue.size", "auth.failures_per_minute"}},
		{"plugin restarts and the cluster need a restart", func(c *config.Config) {
			c.Plugins.Restart.MaxAttempts++
			c.Cluster.Enabled = !c.Cluster.Enabled
		}, []string{"plugins.restart.max_attempts", "cluster.enabled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := config.Default()
			tt.change(&next)
			if got := restartOnly(base, next); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("restartOnly = %v, want %v", got, tt.want)
			}
		})
	}
}
