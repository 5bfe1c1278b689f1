package plugins_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/bearer"
	"github.com/agent-server/agent-server/plugins/jwt"
	"github.com/agent-server/agent-server/plugins/oidc"
	"github.com/agent-server/agent-server/tests/testcert"
)

// idpStub is a JWKS of one RSA key on loopback, standing in for an
// identity provider (tests/e2e runs a real one).
type idpStub struct {
	issuer string
	key    *rsa.PrivateKey
	hits   *atomic.Int64
}

func newIDPStub(t testing.TB) *idpStub {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	j, err := jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1", ALG: jwkset.AlgRS256, USE: jwkset.UseSig}})
	if err != nil {
		t.Fatal(err)
	}
	st := jwkset.NewMemoryStorage()
	if err := st.KeyWrite(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	body, err := st.JSONPublic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hits := &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return &idpStub{issuer: srv.URL, key: key, hits: hits}
}

// config is the oidc plugin config for the stub.
func (s *idpStub) config() map[string]any {
	return map[string]any{"issuer": s.issuer, "audience": "agent-server", "jwks_url": s.issuer + "/keys", "allow_insecure_issuer": true}
}

// token signs an ID token for sub; key overrides the signing key (a forgery).
func (s *idpStub) token(t testing.TB, sub string, key *rsa.PrivateKey) string {
	t.Helper()
	if key == nil {
		key = s.key
	}
	tok := jwtlib.NewWithClaims(jwtlib.SigningMethodRS256, jwtlib.MapClaims{"iss": s.issuer, "aud": "agent-server", "sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = "k1"
	out, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const hsSecret = "an-hs256-secret-of-at-least-32-bytes"

func hs256(t testing.TB, secret, sub string) string {
	t.Helper()
	s, err := jwtlib.NewWithClaims(jwtlib.SigningMethodHS256, jwtlib.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// bearer, oidc and jwt share the Authorization header: in every order, a
// static key, an IdP token and an HS256 token are each decided by their
// own plugin, and a wrong one of each is denied by its own plugin.
func TestSharedAuthorizationHeaderAnyOrder(t *testing.T) {
	ctx := context.Background()
	idp := newIDPStub(t)
	digests, err := plugins.KeyDigests([]string{validKey})
	if err != nil {
		t.Fatal(err)
	}
	oidcCfg, _ := json.Marshal(idp.config())
	locals := map[string]core.Authenticator{}
	for name, mk := range map[string]func() (plugins.Plugin, plugins.ConfigureRequest){
		"bearer": func() (plugins.Plugin, plugins.ConfigureRequest) {
			return bearer.New(), plugins.ConfigureRequest{KeyDigests: digests}
		},
		"oidc": func() (plugins.Plugin, plugins.ConfigureRequest) {
			return oidc.New(), plugins.ConfigureRequest{Config: oidcCfg}
		},
		"jwt": func() (plugins.Plugin, plugins.ConfigureRequest) {
			return jwt.New(), plugins.ConfigureRequest{Config: json.RawMessage(`{"secret":"` + hsSecret + `"}`)}
		},
	} {
		p, req := mk()
		l, err := plugins.NewLocal(ctx, name, p, req)
		if err != nil {
			t.Fatal(err)
		}
		locals[name] = l
	}
	forger, _ := rsa.GenerateKey(rand.Reader, 2048)
	cases := []struct {
		name, token, by string
		want            core.Decision
	}{
		{"static key", validKey, "bearer", core.Allow},
		{"IdP token", idp.token(t, "alice", nil), "oidc", core.Allow},
		{"HS256 token", hs256(t, hsSecret, "svc"), "jwt", core.Allow},
		{"wrong static key", "not-the-key", "bearer", core.Deny},
		{"forged IdP token", idp.token(t, "alice", forger), "oidc", core.Deny},
		{"HS256 token, wrong secret", hs256(t, strings.Repeat("x", 32), "svc"), "jwt", core.Deny},
	}
	orders := [][]string{
		{"bearer", "oidc", "jwt"}, {"bearer", "jwt", "oidc"}, {"oidc", "bearer", "jwt"},
		{"oidc", "jwt", "bearer"}, {"jwt", "bearer", "oidc"}, {"jwt", "oidc", "bearer"},
	}
	for _, order := range orders {
		auths := make([]core.Authenticator, len(order))
		for i, n := range order {
			auths[i] = locals[n]
		}
		c, err := core.NewChain(core.RouteEvents, auths...)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			res := c.Authenticate(ctx, request("", "Authorization", "Bearer "+tc.token))
			if res.Decision != tc.want || res.Authenticator != tc.by {
				t.Errorf("%v, %s: got %s by %q (%s), want %s by %s", order, tc.name, res.Decision, res.Authenticator, res.Reason, tc.want, tc.by)
			}
		}
	}
}

// The client certificate input crosses the wire to a real mtls plugin
// process; a request without one is skipped without an RPC, and a repeated
// certificate is answered from the cache.
func TestClientCertificateThroughHost(t *testing.T) {
	cfg := testConfig(t, true)
	cfg.Auth.Chains = config.Chains{REST: []string{"mtls"}}
	cfg.Plugins.Instances = map[string]config.Plugin{"mtls": {Config: map[string]any{
		"rules": []any{map[string]any{"uri": "spiffe://example.org/agent/*", "scopes": []string{"c1"}}},
	}}}
	h, _ := startHost(t, cfg)
	c := chain(t, h, core.RouteREST)
	ca := testcert.NewCA(t, "ca")
	notAfter := time.Now().Add(time.Hour).Truncate(time.Second)
	agent := ca.Issue(t, testcert.Spec{CommonName: "a", URIs: []string{"spiffe://example.org/agent/builder"}, NotAfter: notAfter, Client: true})
	guest := ca.Issue(t, testcert.Spec{CommonName: "g", URIs: []string{"spiffe://example.org/guest/x"}, Client: true})
	req := func(l *testcert.Leaf) *core.Request {
		r := request("")
		r.Route = core.RouteREST
		if l != nil {
			r.ClientCertificates = []*x509.Certificate{l.Cert, ca.Cert}
		}
		return r
	}
	res := c.Authenticate(context.Background(), req(agent))
	if res.Decision != core.Allow || res.Principal.Subject != "spiffe://example.org/agent/builder" || !res.Principal.Expiry.Equal(notAfter) || !res.Principal.CanAccess("c1") || res.Principal.CanAccess("c2") {
		t.Fatalf("agent certificate: got %s %+v (%v)", res.Decision, res.Principal, res.Err)
	}
	if res := c.Authenticate(context.Background(), req(guest)); res.Decision != core.Deny {
		t.Errorf("guest certificate: got %s, want deny", res.Decision)
	}
	rpcs := plugins.RPCCount(h)
	if res := c.Authenticate(context.Background(), req(nil)); res.Decision != core.Deny || res.Reason != core.ReasonNoCredentials {
		t.Errorf("no certificate: got %s %q, want the chain's no-credentials deny", res.Decision, res.Reason)
	}
	c.Authenticate(context.Background(), req(agent))
	if got := plugins.RPCCount(h) - rpcs; got != 0 {
		t.Errorf("%d RPCs for a request without a certificate and a cached one, want 0", got)
	}
}

// A plugin whose inputs come from its config (the webhook's forwarded
// headers) is skipped, without an RPC, on requests without them; a reload
// that changes them is refused.
func TestConfiguredInputsThroughHost(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("X-Team-Token") != "team-secret" {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Auth-Request-User", "team-a")
	}))
	t.Cleanup(srv.Close)
	cfg := testConfig(t, false)
	cfg.Auth.Chains = config.Chains{REST: []string{"webhook"}}
	wh := map[string]any{"url": srv.URL, "mode": "forward", "allow_insecure_url": true, "headers": []string{"X-Team-Token"}}
	cfg.Plugins.Instances = map[string]config.Plugin{"webhook": {Config: wh}}
	h, _ := startHost(t, cfg)
	c := chain(t, h, core.RouteREST)
	rest := func(headers ...string) *core.Request {
		r := request("", headers...)
		r.Route = core.RouteREST
		return r
	}
	if res := c.Authenticate(context.Background(), rest("X-Team-Token", "team-secret")); res.Decision != core.Allow || res.Principal.Subject != "team-a" {
		t.Fatalf("team token: got %s (%v)", res.Decision, res.Err)
	}
	before := plugins.RPCCount(h)
	if res := c.Authenticate(context.Background(), rest("Authorization", "Bearer x")); res.Decision != core.Deny || res.Reason != core.ReasonNoCredentials {
		t.Errorf("without the configured header: got %s %q", res.Decision, res.Reason)
	}
	if plugins.RPCCount(h) != before || calls.Load() != 1 {
		t.Errorf("a request without the configured header reached the plugin (%d RPCs) or the service (%d calls)", plugins.RPCCount(h)-before, calls.Load())
	}
	next := cfg
	wh2 := map[string]any{"url": srv.URL, "mode": "forward", "allow_insecure_url": true, "headers": []string{"X-Other"}}
	next.Plugins.Instances = map[string]config.Plugin{"webhook": {Config: wh2}}
	if err := h.Reload(context.Background(), next); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Errorf("reload changing the inputs: %v, want a refusal asking for a restart", err)
	}
}

// TestForwardedDecisionsCachedByRequest: the webhook's forward mode sends
// its service the method, path and client address, and the service may
// decide by them; a cached decision for one path never answers another.
// Before, the cache keyed forward mode's decisions by the forwarded
// headers alone: an Allow for path A answered path B for allow_ttl.
func TestForwardedDecisionsCachedByRequest(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("X-Team-Token") != "team-secret" || r.Header.Get("X-Forwarded-Uri") != "/api/conversations/A" {
			http.Error(w, "", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Auth-Request-User", "team-a")
	}))
	t.Cleanup(srv.Close)
	cfg := testConfig(t, true) // the decision cache on, as by default
	cfg.Auth.Chains = config.Chains{REST: []string{"webhook"}}
	wh := map[string]any{"url": srv.URL, "mode": "forward", "allow_insecure_url": true, "headers": []string{"X-Team-Token"}}
	cfg.Plugins.Instances = map[string]config.Plugin{"webhook": {Config: wh}}
	h, _ := startHost(t, cfg)
	c := chain(t, h, core.RouteREST)
	at := func(path, remote string) *core.Request {
		r := request("", "X-Team-Token", "team-secret")
		r.Route, r.Method, r.Path, r.RemoteAddr = core.RouteREST, http.MethodGet, path, remote
		return r
	}
	tests := []struct {
		name   string
		req    *core.Request
		want   core.Decision
		cached bool
	}{
		{"path A", at("/api/conversations/A", "127.0.0.1:40000"), core.Allow, false},
		{"path B, which the service refuses", at("/api/conversations/B", "127.0.0.1:40000"), core.Deny, false},
		{"path A again, from another port", at("/api/conversations/A", "127.0.0.1:40001"), core.Allow, true},
	}
	for _, tt := range tests {
		res := c.Authenticate(context.Background(), tt.req)
		if res.Decision != tt.want || res.Cached != tt.cached {
			t.Errorf("%s: got %s (cached %v, %v), want %s (cached %v)", tt.name, res.Decision, res.Cached, res.Err, tt.want, tt.cached)
		}
	}
	if calls.Load() != 2 {
		t.Errorf("the service was called %d times, want 2 (path A once, path B once)", calls.Load())
	}
}
