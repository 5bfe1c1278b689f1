package plugins_test

import (
	"context"
	"strings"
	"testing"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// TestJWTPluginThroughHost runs the example custom plugin as a process: the
// principal's subject, scopes and expiry survive the wire, and a wrong alg
// is denied before the bearer plugin is asked.
func TestJWTPluginThroughHost(t *testing.T) {
	const secret = "an-hs256-secret-of-at-least-32-bytes"
	cfg := testConfig(t, true)
	cfg.Auth.Chains.REST = []string{"jwt", "bearer"}
	cfg.Plugins.Instances = map[string]config.Plugin{"jwt": {Config: map[string]any{"secret": secret}}}
	h, _ := startHost(t, cfg)
	c := chain(t, h, core.RouteREST)

	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	sign := func(m jwtlib.SigningMethod) string {
		s, err := jwtlib.NewWithClaims(m, jwtlib.MapClaims{"sub": "alice", "exp": exp.Unix(), "conversations": []string{"c1"}}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rest := func(auth string) *core.Request {
		r := request("", "Authorization", auth)
		r.Route = core.RouteREST
		return r
	}

	res := c.Authenticate(context.Background(), rest("Bearer "+sign(jwtlib.SigningMethodHS256)))
	if res.Decision != core.Allow {
		t.Fatalf("valid jwt: got %s %q %v", res.Decision, res.Reason, res.Err)
	}
	p := res.Principal
	if p.Subject != "alice" || p.Authenticator != "jwt" || strings.Join(p.Scopes, ",") != "c1" || !p.Expiry.Equal(exp) {
		t.Errorf("principal = %+v", p)
	}
	if res := c.Authenticate(context.Background(), rest("Bearer "+sign(jwtlib.SigningMethodHS384))); res.Decision != core.Deny || res.Authenticator != "jwt" {
		t.Errorf("HS384: got %s by %q, want deny by jwt", res.Decision, res.Authenticator)
	}
	if res := c.Authenticate(context.Background(), rest("Bearer "+validKey)); res.Decision != core.Allow || res.Authenticator != "bearer" {
		t.Errorf("api key after jwt: got %s by %q, want allow by bearer", res.Decision, res.Authenticator)
	}
}
