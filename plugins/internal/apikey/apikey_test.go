package apikey

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
)

func configured(t *testing.T, keys ...string) *Checker {
	t.Helper()
	d, err := plugins.KeyDigests(keys)
	if err != nil {
		t.Fatal(err)
	}
	var c Checker
	if err := c.Configure(plugins.ConfigureRequest{KeyDigests: d}); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestCheck(t *testing.T) {
	c := configured(t, "old", "new")
	tests := []struct {
		key  string
		want core.Decision
	}{
		{"old", core.Allow},
		{"new", core.Allow},
		{"older", core.Deny},
		{"OLD", core.Deny},
	}
	for _, tc := range tests {
		got := c.Check(tc.key)
		if got.Decision != tc.want {
			t.Errorf("Check(%q) = %s, want %s", tc.key, got.Decision, tc.want)
		}
		if got.Decision == core.Allow && got.Principal.Subject != core.KeyFingerprint(tc.key) {
			t.Errorf("Check(%q) subject = %q, want the fingerprint", tc.key, got.Principal.Subject)
		}
	}
}

func TestUnconfiguredFails(t *testing.T) {
	var c Checker
	if got := c.Check("k"); got.Decision != core.Error {
		t.Errorf("unconfigured Check = %s, want error", got.Decision)
	}
}

func TestConfigureErrors(t *testing.T) {
	tests := []struct {
		name string
		req  plugins.ConfigureRequest
		want string
	}{
		{"no keys", plugins.ConfigureRequest{}, "no session API keys"},
		{"unknown field", plugins.ConfigureRequest{Config: json.RawMessage(`{"keys":["x"]}`), KeyDigests: []string{"x"}}, "unknown field"},
		{"bad digest", plugins.ConfigureRequest{KeyDigests: []string{"sha256:12"}}, "key 0"},
	}
	for _, tc := range tests {
		var c Checker
		err := c.Configure(tc.req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Configure = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// A runtime key allows with the runtime role; a client key never carries it.
func TestRuntimeKeysCarryTheRuntimeRole(t *testing.T) {
	keys, err := plugins.KeyDigests([]string{"client"})
	if err != nil {
		t.Fatal(err)
	}
	runtime, err := plugins.KeyDigests([]string{"runner"})
	if err != nil {
		t.Fatal(err)
	}
	var c Checker
	if err := c.Configure(plugins.ConfigureRequest{KeyDigests: keys, RuntimeKeyDigests: runtime}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key     string
		want    core.Decision
		runtime bool
	}{
		{"client", core.Allow, false},
		{"runner", core.Allow, true},
		{"RUNNER", core.Deny, false},
	}
	for _, tc := range tests {
		got := c.Check(tc.key)
		if got.Decision != tc.want {
			t.Fatalf("Check(%q) = %s, want %s", tc.key, got.Decision, tc.want)
		}
		if got.Decision == core.Allow && got.Principal.HasRole(core.RoleRuntime) != tc.runtime {
			t.Errorf("Check(%q) runtime role = %v, want %v", tc.key, !tc.runtime, tc.runtime)
		}
	}
	bad := plugins.ConfigureRequest{KeyDigests: keys, RuntimeKeyDigests: []string{"sha256:xyz"}}
	if err := c.Configure(bad); err == nil || !strings.Contains(err.Error(), "runtime keys") {
		t.Errorf("Configure with a bad runtime digest: %v, want an error naming runtime keys", err)
	}
}
