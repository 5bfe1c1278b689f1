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
