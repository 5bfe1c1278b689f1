package plugins_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/oidc"
)

// oidcBench is what the OIDC benchmarks share: a JWKS stub, a host running
// the oidc plugin process (with bearer and jwt in the shared-header
// chain), and the plugin linked in as the baseline.
type oidcBench struct {
	idp   *idpStub
	alone *core.Chain // [oidc] through the plugin process
	chain *core.Chain // [bearer, oidc, jwt] through plugin processes
	local core.Authenticator
}

func newOIDCBench(b *testing.B) *oidcBench {
	b.Helper()
	idp := newIDPStub(b)
	cfg := config.Default()
	cfg.Auth.Keys = []string{validKey}
	cfg.Plugins.Dir = binDir
	cfg.Auth.Chains = config.Chains{Events: []string{"bearer", "oidc", "jwt"}, REST: []string{"oidc"}}
	cfg.Plugins.Instances = map[string]config.Plugin{
		"oidc": {Config: idp.config()},
		"jwt":  {Config: map[string]any{"secret": hsSecret}},
	}
	h := plugins.NewHost(cfg, nil)
	if err := h.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	ob := &oidcBench{idp: idp}
	var err error
	if ob.chain, err = h.Chain(core.RouteEvents); err != nil {
		b.Fatal(err)
	}
	if ob.alone, err = h.Chain(core.RouteREST); err != nil {
		b.Fatal(err)
	}
	raw, _ := json.Marshal(idp.config())
	if ob.local, err = plugins.NewLocal(context.Background(), "oidc", oidc.New(), plugins.ConfigureRequest{Config: raw}); err != nil {
		b.Fatal(err)
	}
	return ob
}

// requests returns n requests, each with its own freshly signed ID token,
// or n times the same one.
func (ob *oidcBench) requests(b *testing.B, n int, distinct bool) []*core.Request {
	b.Helper()
	out := make([]*core.Request, n)
	tok := ob.idp.token(b, "alice", nil)
	for i := range out {
		if distinct {
			tok = ob.idp.token(b, "user-"+strconv.Itoa(i), nil)
		}
		out[i] = request("", "Authorization", "Bearer "+tok)
	}
	return out
}

// BenchmarkOIDC measures authenticating a socket's handshake carrying an
// RS256 ID token, call by call, subject and in-process baseline alternated
// on the same token so both see the same machine noise:
//
//   - distinct-alone: a new token every call, the [oidc] chain through its
//     plugin process: one RPC and one signature check per call;
//   - distinct-shared-header: the same through [bearer, oidc, jwt]: bearer
//     abstains on the JWT after an RPC of its own, so two RPCs;
//   - repeated: one token again and again through [bearer, oidc, jwt]: the
//     host's decision cache answers.
//
// The baseline is the oidc plugin linked into the process (plugins.Local),
// verifying the same token every call (no cache). Tokens are signed before
// the timer starts; run with -benchtime 2000x to bound the signing.
func BenchmarkOIDC(b *testing.B) {
	ob := newOIDCBench(b)
	for _, tc := range []struct {
		name     string
		chain    func() *core.Chain
		distinct bool
	}{
		{"distinct-alone", func() *core.Chain { return ob.alone }, true},
		{"distinct-shared-header", func() *core.Chain { return ob.chain }, true},
		{"repeated", func() *core.Chain { return ob.chain }, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			reqs := ob.requests(b, b.N, tc.distinct)
			pairedOver(b, chainAuth{tc.chain()}, ob.local, reqs)
		})
	}
}
