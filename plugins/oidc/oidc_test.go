package oidc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/subprotocol"
)

// signer is one signing key of the fake provider.
type signer struct {
	kid  string
	m    jwtlib.SigningMethod
	priv crypto.Signer
}

func newSigner(t testing.TB, kid string, m jwtlib.SigningMethod) signer {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch m {
	case jwtlib.SigningMethodRS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jwtlib.SigningMethodES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwtlib.SigningMethodEdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, m: m, priv: priv}
}

// provider is a fake OpenID provider on loopback: discovery and a JWKS it
// counts, whose keys a test rotates and which a test takes down.
type provider struct {
	t     testing.TB
	srv   *httptest.Server
	jwks  atomic.Int64 // JWKS requests served
	mu    sync.Mutex
	keys  []signer
	down  bool
	issue string // the issuer the discovery document names; "" is the real one
}

func newProvider(t testing.TB, keys ...signer) *provider {
	t.Helper()
	p := &provider{t: t, keys: keys}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *provider) issuer() string { return p.srv.URL }

func (p *provider) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		iss := p.issue
		if iss == "" {
			iss = p.issuer()
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": p.issuer() + "/keys"})
	case "/keys":
		p.jwks.Add(1)
		st := jwkset.NewMemoryStorage()
		for _, k := range p.keys {
			j, err := jwkset.NewJWKFromKey(k.priv.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: jwkset.ALG(k.m.Alg()), USE: jwkset.UseSig}})
			if err != nil {
				p.t.Error(err)
				return
			}
			_ = st.KeyWrite(r.Context(), j)
		}
		b, _ := st.JSONPublic(r.Context())
		_, _ = w.Write(b)
	default:
		http.NotFound(w, r)
	}
}

func (p *provider) set(f func(p *provider)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// clock is a settable time for the plugin.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func configured(t testing.TB, c *clock, cfg map[string]any) *Plugin {
	t.Helper()
	p := New()
	p.now = c.now
	raw, _ := json.Marshal(cfg)
	if err := p.Configure(context.Background(), plugins.ConfigureRequest{Config: raw}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cancel() })
	return p
}

func baseConfig(idp *provider) map[string]any {
	return map[string]any{"issuer": idp.issuer(), "audience": "agent-server", "allow_insecure_issuer": true, "algorithms": []string{"RS256", "ES256", "EdDSA"}}
}

// sign makes a token with claims over the defaults (iss, aud, sub, exp).
func sign(t testing.TB, iss string, k signer, kid string, claims jwtlib.MapClaims) string {
	t.Helper()
	c := jwtlib.MapClaims{"iss": iss, "aud": "agent-server", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	for name, v := range claims {
		if v == nil {
			delete(c, name)
			continue
		}
		c[name] = v
	}
	tok := jwtlib.NewWithClaims(k.m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	var key any = k.priv
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bearerReq(tok string) *core.Request {
	return &core.Request{Header: http.Header{"Authorization": {"Bearer " + tok}}}
}

func TestAuthenticate(t *testing.T) {
	rs, es, ed := newSigner(t, "rs", jwtlib.SigningMethodRS256), newSigner(t, "es", jwtlib.SigningMethodES256), newSigner(t, "ed", jwtlib.SigningMethodEdDSA)
	stranger := newSigner(t, "rs", jwtlib.SigningMethodRS256) // same kid, another key: a forgery
	idp := newProvider(t, rs, es, ed)
	c := newClock()
	cfg := baseConfig(idp)
	cfg["required_claims"] = map[string][]string{"email_verified": {"true"}}
	p := configured(t, c, cfg)
	iss := idp.issuer()
	ok := jwtlib.MapClaims{"email_verified": true}
	with := func(extra jwtlib.MapClaims) jwtlib.MapClaims {
		out := jwtlib.MapClaims{"email_verified": true}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	none, err := jwtlib.NewWithClaims(jwtlib.SigningMethodNone, jwtlib.MapClaims{"iss": iss, "aud": "agent-server", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwtlib.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := jwtlib.NewWithClaims(jwtlib.SigningMethodHS256, jwtlib.MapClaims{"iss": iss, "aud": "agent-server", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(strings.Repeat("s", 32)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		req    *core.Request
		want   core.Decision
		reason string
	}{
		{"RS256", bearerReq(sign(t, iss, rs, "rs", ok)), core.Allow, ""},
		{"ES256", bearerReq(sign(t, iss, es, "es", ok)), core.Allow, ""},
		{"EdDSA", bearerReq(sign(t, iss, ed, "ed", ok)), core.Allow, ""},
		{"no kid: every key is tried", bearerReq(sign(t, iss, es, "", ok)), core.Allow, ""},
		{"subprotocol entry", &core.Request{Subprotocols: []string{subprotocol.Protocol, subprotocol.Entry(sign(t, iss, rs, "rs", ok))}}, core.Allow, ""},
		{"expired", bearerReq(sign(t, iss, rs, "rs", with(jwtlib.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}))), core.Deny, "token expired"},
		{"expired within leeway", bearerReq(sign(t, iss, rs, "rs", with(jwtlib.MapClaims{"exp": time.Now().Add(-10 * time.Second).Unix()}))), core.Allow, ""},
		{"not yet valid", bearerReq(sign(t, iss, rs, "rs", with(jwtlib.MapClaims{"nbf": time.Now().Add(time.Hour).Unix()}))), core.Deny, "token not valid yet"},
		{"no exp", bearerReq(sign(t, iss, rs, "rs", with(jwtlib.MapClaims{"exp": nil}))), core.Deny, "token lacks a required claim"},
		{"wrong audience", bearerReq(sign(t, iss, rs, "rs", with(jwtlib.MapClaims{"aud": "other-app"}))), core.Deny, "token audience not accepted"},
		{"one of several audiences", bearerReq(sign(t, iss, rs, "rs", with(jwtlib.MapClaims{"aud": []string{"x", "agent-server"}}))), core.Allow, ""},
		{"forged signature", bearerReq(sign(t, iss, stranger, "rs", ok)), core.Deny, "invalid token signature"},
		{"alg none", bearerReq(none), core.Deny, "token signing method not accepted"},
		{"HS256 not configured", bearerReq(hs), core.Deny, "token signing method not accepted"},
		{"no sub", bearerReq(sign(t, iss, rs, "rs", with(jwtlib.MapClaims{"sub": nil}))), core.Deny, "token has no sub claim"},
		{"required claim missing", bearerReq(sign(t, iss, rs, "rs", nil)), core.Deny, "token lacks a required value of claim email_verified"},
		{"required claim wrong", bearerReq(sign(t, iss, rs, "rs", jwtlib.MapClaims{"email_verified": false})), core.Deny, "token lacks a required value of claim email_verified"},
		// Not its own: another issuer's token, an API key, a JWE-shaped token.
		{"other issuer", bearerReq(sign(t, "https://other.example", rs, "rs", ok)), core.Abstain, ""},
		{"api key", bearerReq("sk-not-a-jwt"), core.Abstain, ""},
		{"no credential", &core.Request{}, core.Abstain, ""},
		{"subprotocol without the real protocol", &core.Request{Subprotocols: []string{subprotocol.Entry(sign(t, iss, rs, "rs", ok))}}, core.Abstain, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := p.Authenticate(context.Background(), tc.req)
			if got.Decision != tc.want || got.Reason != tc.reason {
				t.Fatalf("got %s %q (%v), want %s %q", got.Decision, got.Reason, got.Err, tc.want, tc.reason)
			}
		})
	}
	if n := idp.jwks.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times, want once (at Configure): no token above names an unknown key", n)
	}
}

func TestPrincipal(t *testing.T) {
	rs := newSigner(t, "rs", jwtlib.SigningMethodRS256)
	idp := newProvider(t, rs)
	cfg := baseConfig(idp)
	cfg["subject_claim"] = "email"
	cfg["scopes_claim"] = "convs"
	p := configured(t, newClock(), cfg)
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tests := []struct {
		name   string
		claims jwtlib.MapClaims
		scopes []string
		want   core.Decision
	}{
		{"list of conversations", jwtlib.MapClaims{"email": "a@x", "convs": []string{"c1", "c2"}}, []string{"c1", "c2"}, core.Allow},
		{"space-separated", jwtlib.MapClaims{"email": "a@x", "convs": "c1 c2"}, []string{"c1", "c2"}, core.Allow},
		{"none: every conversation", jwtlib.MapClaims{"email": "a@x"}, nil, core.Allow},
		{"not strings", jwtlib.MapClaims{"email": "a@x", "convs": []int{1}}, nil, core.Deny},
		{"no subject claim", jwtlib.MapClaims{"convs": "c1"}, nil, core.Deny},
	}
	for _, tc := range tests {
		tc.claims["exp"] = exp.Unix()
		res := p.Authenticate(context.Background(), bearerReq(sign(t, idp.issuer(), rs, "rs", tc.claims)))
		if res.Decision != tc.want {
			t.Errorf("%s: got %s %q, want %s", tc.name, res.Decision, res.Reason, tc.want)
			continue
		}
		if tc.want != core.Allow {
			continue
		}
		pr := res.Principal
		if pr.Subject != "a@x" || !pr.Expiry.Equal(exp) || strings.Join(pr.Scopes, ",") != strings.Join(tc.scopes, ",") || pr.Claims["iss"] != idp.issuer() {
			t.Errorf("%s: principal = %+v", tc.name, pr)
		}
	}
}

// A token naming a key the plugin does not hold fetches the key set again,
// at most once per min_refresh_interval however many such tokens arrive;
// the rest fail closed and count as the request's fault.
func TestUnknownKidRefreshIsRateLimited(t *testing.T) {
	rs := newSigner(t, "rs", jwtlib.SigningMethodRS256)
	idp := newProvider(t, rs)
	c := newClock()
	cfg := baseConfig(idp)
	cfg["min_refresh_interval"] = "10s"
	p := configured(t, c, cfg)
	idp.jwks.Store(0)

	// Rotation: the provider adds a key; its first token fetches once.
	next := newSigner(t, "next", jwtlib.SigningMethodES256)
	idp.set(func(p *provider) { p.keys = append(p.keys, next) })
	c.advance(11 * time.Second)
	if res := p.Authenticate(context.Background(), bearerReq(sign(t, idp.issuer(), next, "next", nil))); res.Decision != core.Allow {
		t.Fatalf("token of the new key: got %s %q %v", res.Decision, res.Reason, res.Err)
	}
	if n := idp.jwks.Load(); n != 1 {
		t.Fatalf("rotation fetched %d times, want 1", n)
	}

	// A burst of random kids within one interval: no fetch at all, since
	// one just happened; each fails closed as the request's fault.
	forger := newSigner(t, "x", jwtlib.SigningMethodRS256)
	var wg sync.WaitGroup
	var errs, faults atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := range 125 {
				res := p.Authenticate(context.Background(), bearerReq(sign(t, idp.issuer(), forger, fmt.Sprintf("kid-%d-%d", w, i), nil)))
				if res.Decision == core.Error {
					errs.Add(1)
				}
				if res.RequestFault {
					faults.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := idp.jwks.Load(); n != 1 {
		t.Errorf("1000 unknown kids within the interval fetched %d more times, want 0", n-1)
	}
	if errs.Load() != 1000 || faults.Load() != 1000 {
		t.Errorf("got %d errors, %d of them request faults; want 1000 and 1000", errs.Load(), faults.Load())
	}

	// After the interval one fetch is allowed; a kid still absent is then
	// known not to be the issuer's: Deny.
	c.advance(10 * time.Second)
	if res := p.Authenticate(context.Background(), bearerReq(sign(t, idp.issuer(), forger, "kid-y", nil))); res.Decision != core.Deny {
		t.Errorf("unknown kid after a fresh fetch: got %s, want deny", res.Decision)
	}
	if n := idp.jwks.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2", n)
	}
	// Known keys and forged signatures under a known kid never fetch.
	for range 100 {
		p.Authenticate(context.Background(), bearerReq(sign(t, idp.issuer(), forger, "rs", nil)))
		p.Authenticate(context.Background(), bearerReq(sign(t, idp.issuer(), rs, "rs", nil)))
	}
	if n := idp.jwks.Load(); n != 2 {
		t.Errorf("known kids fetched: %d fetches, want 2", n)
	}
}

// While the provider is unreachable, known keys keep working and a token
// that needs a fetch fails closed; an unreachable provider at boot does not
// fail Configure, and its tokens work once it is back.
func TestProviderOutage(t *testing.T) {
	rs := newSigner(t, "rs", jwtlib.SigningMethodRS256)
	idp := newProvider(t, rs)
	c := newClock()
	cfg := baseConfig(idp)
	cfg["min_refresh_interval"] = "1s"
	p := configured(t, c, cfg)
	idp.set(func(p *provider) { p.down = true })
	c.advance(2 * time.Second)
	if res := p.Authenticate(context.Background(), bearerReq(sign(t, idp.issuer(), rs, "rs", nil))); res.Decision != core.Allow {
		t.Errorf("known key during the outage: got %s %v", res.Decision, res.Err)
	}
	other := newSigner(t, "new", jwtlib.SigningMethodRS256)
	res := p.Authenticate(context.Background(), bearerReq(sign(t, idp.issuer(), other, "new", nil)))
	if res.Decision != core.Error || !res.RequestFault {
		t.Errorf("unknown key during the outage: got %s (fault %v), want a request-fault error", res.Decision, res.RequestFault)
	}

	// Boot while the provider is down.
	down := newProvider(t, rs)
	down.set(func(p *provider) { p.down = true })
	c2 := newClock()
	cfg2 := baseConfig(down)
	cfg2["min_refresh_interval"] = "1s"
	p2 := configured(t, c2, cfg2)
	tok := sign(t, down.issuer(), rs, "rs", nil)
	c2.advance(2 * time.Second)
	if res := p2.Authenticate(context.Background(), bearerReq(tok)); res.Decision != core.Error {
		t.Errorf("no keys yet: got %s, want error", res.Decision)
	}
	down.set(func(p *provider) { p.down = false })
	c2.advance(2 * time.Second)
	if res := p2.Authenticate(context.Background(), bearerReq(tok)); res.Decision != core.Allow {
		t.Errorf("provider back: got %s %q %v, want allow", res.Decision, res.Reason, res.Err)
	}
}

func TestDiscovery(t *testing.T) {
	rs := newSigner(t, "rs", jwtlib.SigningMethodRS256)
	idp := newProvider(t, rs)
	cfg := baseConfig(idp)
	cfg["jwks_url"] = idp.issuer() + "/keys"
	direct := configured(t, newClock(), cfg)
	discovered := configured(t, newClock(), baseConfig(idp))
	tok := sign(t, idp.issuer(), rs, "rs", nil)
	for name, p := range map[string]*Plugin{"jwks_url": direct, "discovery": discovered} {
		if res := p.Authenticate(context.Background(), bearerReq(tok)); res.Decision != core.Allow {
			t.Errorf("%s: got %s %v", name, res.Decision, res.Err)
		}
	}
	// A discovery document naming another issuer is refused: fail closed.
	liar := newProvider(t, rs)
	liar.set(func(p *provider) { p.issue = "https://evil.example" })
	p := configured(t, newClock(), baseConfig(liar))
	if res := p.Authenticate(context.Background(), bearerReq(sign(t, liar.issuer(), rs, "rs", nil))); res.Decision != core.Error {
		t.Errorf("discovery naming another issuer: got %s, want error", res.Decision)
	}
}

func TestHMAC(t *testing.T) {
	idp := newProvider(t, newSigner(t, "rs", jwtlib.SigningMethodRS256))
	secret := strings.Repeat("k", 32)
	cfg := baseConfig(idp)
	cfg["algorithms"] = []string{"RS256", "HS256"}
	cfg["hmac_secret"] = secret
	p := configured(t, newClock(), cfg)
	claims := jwtlib.MapClaims{"iss": idp.issuer(), "aud": "agent-server", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	for secret, want := range map[string]core.Decision{secret: core.Allow, strings.Repeat("x", 32): core.Deny} {
		tok, err := jwtlib.NewWithClaims(jwtlib.SigningMethodHS256, claims).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		if res := p.Authenticate(context.Background(), bearerReq(tok)); res.Decision != want {
			t.Errorf("HS256: got %s %q, want %s", res.Decision, res.Reason, want)
		}
	}
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		cfg  string
		want string
	}{
		{`{}`, "issuer"},
		{`{"issuer":"http://idp.example","audience":"a"}`, "allow_insecure_issuer"},
		{`{"issuer":"ftp://idp.example","audience":"a"}`, "https"},
		{`{"issuer":"https://idp.example"}`, "audience is required"},
		{`{"issuer":"https://idp.example","audience":["a",""]}`, "audience is required"},
		{`{"issuer":"https://idp.example","audience":7}`, "audience"},
		{`{"issuer":"https://idp.example","audience":"a","algorithms":["none"]}`, `"none" is never accepted`},
		{`{"issuer":"https://idp.example","audience":"a","algorithms":["HS256"]}`, "hmac_secret must be at least"},
		{`{"issuer":"https://idp.example","audience":"a","hmac_secret":"0123456789abcdef0123456789abcdef"}`, "lists no HS algorithm"},
		{`{"issuer":"https://idp.example","audience":"a","algorithms":["XS1"]}`, "unknown algorithm"},
		{`{"issuer":"https://idp.example","audience":"a","leeway":"soon"}`, "leeway"},
		{`{"issuer":"https://idp.example","audience":"a","min_refresh_interval":"0s"}`, "min_refresh_interval"},
		{`{"issuer":"https://idp.example","audience":"a","jwks_url":"http://idp.example/keys"}`, "jwks_url"},
		{`{"issuer":"https://idp.example","audience":"a","required_claims":{"groups":[]}}`, "required_claims"},
		{`{"issuer":"https://idp.example","audience":"a","ca_file":"/nonexistent/ca.pem"}`, "ca_file"},
		{`{"issuer":"https://idp.example","audience":"a","secret":"x"}`, "unknown field"},
	}
	for _, tc := range tests {
		p := New()
		err := p.Configure(context.Background(), plugins.ConfigureRequest{Config: json.RawMessage(tc.cfg)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "0123456789abcdef") {
			t.Errorf("%s: error echoes the secret", tc.cfg)
		}
	}
	if res := New().Authenticate(context.Background(), bearerReq("x.y.z")); res.Decision != core.Error {
		t.Errorf("unconfigured: got %s, want error", res.Decision)
	}
}

// An unknown kid waits for a fetch in flight rather than starting another,
// a request's deadline does not cancel the fetch, and Configure does not
// wait for it past its own deadline.
func TestConcurrentUnknownKidsShareOneFetch(t *testing.T) {
	rs := newSigner(t, "rs", jwtlib.SigningMethodRS256)
	idp := newProvider(t, rs)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		idp.srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)
	c := newClock()
	cfg := baseConfig(idp)
	cfg["jwks_url"] = slow.URL + "/keys"
	cfg["min_refresh_interval"] = "1ms"
	p := New()
	p.now = c.now
	raw, _ := json.Marshal(cfg)
	// A provider that hangs does not fail Configure, which answers before
	// the host's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if err := p.Configure(ctx, plugins.ConfigureRequest{Config: raw}); err != nil || ctx.Err() != nil {
		t.Fatalf("configure with a hanging provider: %v, deadline passed: %v", err, ctx.Err())
	}
	cancel()
	t.Cleanup(func() { p.cancel() })
	c.advance(time.Second)
	tok := sign(t, idp.issuer(), rs, "rs", nil)
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if res := p.Authenticate(short, bearerReq(tok)); res.Decision != core.Error {
		t.Fatalf("while the first fetch hangs: got %s, want error", res.Decision)
	}
	if n := p.state.Load().keys.fetches.Load(); n != 1 {
		t.Errorf("started %d fetches, want the one from Configure, still in flight", n)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for p.Authenticate(context.Background(), bearerReq(tok)).Decision != core.Allow {
		if time.Now().After(deadline) {
			t.Fatal("the detached fetch never delivered the keys")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
