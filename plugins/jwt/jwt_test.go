package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/internal/jwttoken"
)

const secret = "0123456789abcdef0123456789abcdef"

var (
	rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _  = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newConfigured(t testing.TB, cfg map[string]any) *Plugin {
	t.Helper()
	raw, _ := json.Marshal(cfg)
	p := New()
	p.now = func() time.Time { return now }
	if err := p.Configure(context.Background(), plugins.ConfigureRequest{Config: raw}); err != nil {
		t.Fatal(err)
	}
	return p
}

func sign(t *testing.T, m jwtlib.SigningMethod, key any, claims jwtlib.MapClaims) string {
	t.Helper()
	s, err := jwtlib.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuthenticate(t *testing.T) {
	p := newConfigured(t, map[string]any{"secret": secret})
	exp := now.Add(time.Hour)
	valid := jwtlib.MapClaims{"sub": "alice", "exp": exp.Unix()}
	with := func(extra jwtlib.MapClaims) jwtlib.MapClaims {
		c := jwtlib.MapClaims{}
		for k, v := range valid {
			c[k] = v
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	hs := func(c jwtlib.MapClaims) string { return sign(t, jwtlib.SigningMethodHS256, []byte(secret), c) }
	tests := []struct {
		name   string
		auth   string
		want   core.Decision
		reason string
	}{
		{"no header", "", core.Abstain, ""},
		{"basic", "Basic eA==", core.Abstain, ""},
		{"bearer api key", "Bearer k", core.Abstain, ""},
		{"valid", "Bearer " + hs(valid), core.Allow, ""},
		{"lower-case scheme", "bearer " + hs(valid), core.Allow, ""},
		{"expired", "Bearer " + hs(with(jwtlib.MapClaims{"exp": now.Add(-time.Second).Unix()})), core.Deny, "token expired"},
		{"not yet valid", "Bearer " + hs(with(jwtlib.MapClaims{"nbf": now.Add(time.Minute).Unix()})), core.Deny, "token not valid yet"},
		{"nbf passed", "Bearer " + hs(with(jwtlib.MapClaims{"nbf": now.Add(-time.Minute).Unix()})), core.Allow, ""},
		{"no exp", "Bearer " + hs(jwtlib.MapClaims{"sub": "alice"}), core.Deny, "token lacks a required claim"},
		{"no sub", "Bearer " + hs(jwtlib.MapClaims{"exp": exp.Unix()}), core.Deny, "token has no sub"},
		{"wrong secret", "Bearer " + sign(t, jwtlib.SigningMethodHS256, []byte(strings.Repeat("x", 32)), valid), core.Deny, "invalid token signature"},
		{"HS512", "Bearer " + sign(t, jwtlib.SigningMethodHS512, []byte(secret), valid), core.Deny, "token signing method not accepted"},
		{"alg none", "Bearer " + sign(t, jwtlib.SigningMethodNone, jwtlib.UnsafeAllowNoneSignatureType, valid), core.Deny, "token signing method not accepted"},
		{"bad signature encoding", "Bearer " + hs(valid)[:strings.LastIndex(hs(valid), ".")] + ".bad_sig", core.Deny, "invalid token signature"},
		// Not its own: an API key, a dotted key, an identity provider's token.
		{"dotted key", "Bearer a.b.c", core.Abstain, ""},
		{"RS256 (an IdP token)", "Bearer " + sign(t, jwtlib.SigningMethodRS256, rsaKey, valid), core.Abstain, ""},
		{"ES256 (an IdP token)", "Bearer " + sign(t, jwtlib.SigningMethodES256, ecKey, valid), core.Abstain, ""},
	}
	for _, tc := range tests {
		req := &core.Request{Header: http.Header{}}
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		got := p.Authenticate(context.Background(), req)
		if got.Decision != tc.want || got.Reason != tc.reason {
			t.Errorf("%s: got %s %q, want %s %q", tc.name, got.Decision, got.Reason, tc.want, tc.reason)
		}
	}
}

func TestPrincipal(t *testing.T) {
	p := newConfigured(t, map[string]any{"secret": secret, "issuer": "me", "audience": "agent-server"})
	exp := now.Add(time.Hour).Truncate(time.Second)
	tok := sign(t, jwtlib.SigningMethodHS256, []byte(secret), jwtlib.MapClaims{
		"sub": "alice", "exp": exp.Unix(), "iss": "me", "aud": "agent-server",
		"conversations": []string{"c1", "c2"}, "roles": []string{"runtime"},
	})
	res := p.Authenticate(context.Background(), &core.Request{Header: http.Header{"Authorization": {"Bearer " + tok}}})
	if res.Decision != core.Allow {
		t.Fatalf("got %s %q", res.Decision, res.Reason)
	}
	pr := res.Principal
	if pr.Subject != "alice" || !pr.Expiry.Equal(exp) || strings.Join(pr.Scopes, ",") != "c1,c2" || pr.Claims["iss"] != "me" {
		t.Errorf("principal = %+v", pr)
	}
	if !pr.CanAccess("c2") || pr.CanAccess("c3") {
		t.Error("scopes do not restrict conversations")
	}
	if !pr.HasRole(core.RoleRuntime) {
		t.Errorf("roles = %v, want the roles claim", pr.Roles)
	}
	for _, tc := range []struct {
		claims jwtlib.MapClaims
		want   core.Decision
	}{
		{jwtlib.MapClaims{"sub": "a", "exp": exp.Unix(), "iss": "me", "aud": "other"}, core.Deny},
		// Another issuer's token is not its own: another plugin may serve it.
		{jwtlib.MapClaims{"sub": "a", "exp": exp.Unix(), "iss": "other", "aud": "agent-server"}, core.Abstain},
		{jwtlib.MapClaims{"sub": "a", "exp": exp.Unix(), "aud": "agent-server"}, core.Abstain},
	} {
		tok := sign(t, jwtlib.SigningMethodHS256, []byte(secret), tc.claims)
		if res := p.Authenticate(context.Background(), &core.Request{Header: http.Header{"Authorization": {"Bearer " + tok}}}); res.Decision != tc.want {
			t.Errorf("%v: got %s, want %s", tc.claims, res.Decision, tc.want)
		}
	}
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		cfg  string
		want string
	}{
		{`{}`, "secret must be at least 32 bytes"},
		{`{"secret":"short"}`, "secret must be at least 32 bytes"},
		{`{"secret":"` + secret + `","leeway":"soon"}`, "leeway"},
		{`{"secret":"` + secret + `","alg":"RS256"}`, "unknown field"},
		{`{"secret":"` + secret + `","leeway":"30s"}`, ""},
	}
	for _, tc := range tests {
		err := New().Configure(context.Background(), plugins.ConfigureRequest{Config: json.RawMessage(tc.cfg)})
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err = %v, want %q", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error echoes the secret", tc.cfg)
		}
	}
	tok := sign(t, jwtlib.SigningMethodHS256, []byte(secret), jwtlib.MapClaims{"sub": "a"})
	if res := New().Authenticate(context.Background(), &core.Request{Header: http.Header{"Authorization": {"Bearer " + tok}}}); res.Decision != core.Error {
		t.Errorf("unconfigured: got %s, want error", res.Decision)
	}
}

// BenchmarkAuthenticate measures an uncached check inside the plugin: a
// valid HS256 token like the load generator's (also with the fast path
// off, as golang-jwt alone verifies it), the same with an issuer
// configured, the abstains on an API key and an identity provider's token,
// and, as the reference, golang-jwt's ParseWithClaims alone as the
// baseline server (bench/baseline) verifies the same token.
func BenchmarkAuthenticate(b *testing.B) {
	exp := now.Add(time.Hour).Unix()
	hs := func(c jwtlib.MapClaims) string {
		s, err := jwtlib.NewWithClaims(jwtlib.SigningMethodHS256, c).SignedString([]byte(secret))
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	rs, err := jwtlib.NewWithClaims(jwtlib.SigningMethodRS256, jwtlib.MapClaims{"sub": "a", "exp": exp}).SignedString(rsaKey)
	if err != nil {
		b.Fatal(err)
	}
	plain := hs(jwtlib.MapClaims{"sub": "bench-0123456789ab-4711", "exp": exp})
	issued := hs(jwtlib.MapClaims{"sub": "bench-0123456789ab-4711", "exp": exp, "iss": "https://issuer"})
	p := newConfigured(b, map[string]any{"secret": secret})
	withIssuer := newConfigured(b, map[string]any{"secret": secret, "issuer": "https://issuer"})
	for _, bc := range []struct {
		name string
		p    *Plugin
		tok  string
		want core.Decision
	}{
		{"valid", p, plain, core.Allow},
		{"valid, golang-jwt only", golangJWTOnly(p), plain, core.Allow},
		{"valid with issuer", withIssuer, issued, core.Allow},
		{"api key", p, "sk-0123456789abcdef0123456789abcdef", core.Abstain},
		{"RS256", p, rs, core.Abstain},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := &core.Request{Header: http.Header{"Authorization": {"Bearer " + bc.tok}}}
			if got := bc.p.Authenticate(context.Background(), req); got.Decision != bc.want {
				b.Fatalf("got %s %q, want %s", got.Decision, got.Reason, bc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				bc.p.Authenticate(context.Background(), req)
			}
		})
	}
	b.Run("golang-jwt alone", func(b *testing.B) {
		parser := jwtlib.NewParser(jwtlib.WithValidMethods([]string{"HS256"}), jwtlib.WithExpirationRequired(), jwtlib.WithTimeFunc(func() time.Time { return now }))
		key := func(*jwtlib.Token) (any, error) { return []byte(secret), nil }
		b.ReportAllocs()
		for b.Loop() {
			var claims jwtlib.RegisteredClaims
			if _, err := parser.ParseWithClaims(plain, &claims, key); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// golangJWTOnly returns a copy of p that verifies every token with
// golang-jwt: the reference the fast path must match.
func golangJWTOnly(p *Plugin) *Plugin {
	c := *p.parser.Load()
	c.fast = nil
	ref := &Plugin{now: p.now}
	ref.parser.Store(&c)
	return ref
}

// fastPathOnly returns a copy of p whose golang-jwt refuses every token:
// what it allows, Authenticate allowed on the fast path.
func fastPathOnly(p *Plugin) *Plugin {
	c := *p.parser.Load()
	c.parser = jwtlib.NewParser(jwtlib.WithValidMethods([]string{"none"}))
	only := &Plugin{now: p.now}
	only.parser.Store(&c)
	return only
}

// TestFastPathMatchesGolangJWT checks that every token gets the verdict,
// reason and principal golang-jwt alone would give it, under each claims
// check Configure sets up, at each time check's edges, and that the
// common tokens take the fast path.
func TestFastPathMatchesGolangJWT(t *testing.T) {
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	claims := []jwtlib.MapClaims{
		{"sub": "alice", "exp": at(time.Hour)},
		{"sub": "alice", "exp": at(0)},
		{"sub": "alice", "exp": at(time.Second)},
		{"sub": "alice", "exp": at(-time.Second)},
		{"sub": "alice", "exp": at(-29 * time.Second)},
		{"sub": "alice", "exp": at(-31 * time.Second)},
		{"sub": "alice", "exp": at(time.Hour), "nbf": at(0)},
		{"sub": "alice", "exp": at(time.Hour), "nbf": at(time.Second)},
		{"sub": "alice", "exp": at(time.Hour), "nbf": at(29 * time.Second)},
		{"sub": "alice", "exp": at(time.Hour), "nbf": at(31 * time.Second)},
		{"sub": "alice", "exp": at(time.Hour), "iat": at(time.Hour)},
		{"sub": "", "exp": at(time.Hour)},
		{"exp": at(time.Hour)},
		{"sub": "alice"},
		{"sub": "alice", "exp": float64(at(time.Hour)) + 0.5},
		{"sub": "alice", "exp": at(time.Hour), "iss": "me"},
		{"sub": "alice", "exp": at(time.Hour), "iss": "me", "aud": "agent-server"},
		{"sub": "alice", "exp": at(time.Hour), "iss": "me", "aud": []string{"x", "agent-server"}},
		{"sub": "alice", "exp": at(time.Hour), "iss": "me", "aud": []string{"x"}},
		{"sub": "alice", "exp": at(time.Hour), "iss": "me", "aud": ""},
		{"sub": "alice", "exp": at(time.Hour), "iss": "me", "aud": []string{}},
		{"sub": "alice", "exp": at(time.Hour), "iss": "", "aud": "agent-server"},
		{"sub": "alice", "exp": at(time.Hour), "conversations": []string{"c1", "c2"}, "roles": []string{"runtime"}},
		{"sub": "alice", "exp": at(time.Hour), "conversations": []string{}, "roles": []string{}},
		{"sub": "alice", "exp": at(time.Hour), "Sub": "mallory"},
		{"sub": "alice", "exp": at(time.Hour), "email": "a@example.com", "groups": []any{"g", 1, nil}},
	}
	var toks []string
	for _, c := range claims {
		for _, m := range []jwtlib.SigningMethod{jwtlib.SigningMethodHS256, jwtlib.SigningMethodHS384} {
			toks = append(toks, sign(t, m, []byte(secret), c))
		}
		toks = append(toks, sign(t, jwtlib.SigningMethodHS256, []byte(strings.Repeat("x", 32)), c))
	}
	fast := 0
	for _, cfg := range []map[string]any{
		{"secret": secret},
		{"secret": secret, "leeway": "30s"},
		{"secret": secret, "issuer": "me"},
		{"secret": secret, "issuer": "me", "audience": "agent-server", "leeway": "30s"},
	} {
		p := newConfigured(t, cfg)
		ref, fastOnly := golangJWTOnly(p), fastPathOnly(p)
		for _, tok := range toks {
			req := &core.Request{Header: http.Header{"Authorization": {"Bearer " + tok}}}
			got, want := p.Authenticate(context.Background(), req), ref.Authenticate(context.Background(), req)
			if got.Decision != want.Decision || got.Reason != want.Reason || !reflect.DeepEqual(got.Principal, want.Principal) {
				t.Errorf("%v: %s: got %s %q %+v; golang-jwt gives %s %q %+v", cfg, tok, got.Decision, got.Reason, got.Principal, want.Decision, want.Reason, want.Principal)
			}
			// A token the fast path reads, it must also decide: its checks
			// pass exactly the tokens golang-jwt allows, and Authenticate
			// allows them with golang-jwt refusing everything.
			var fc jwttoken.Claims
			if c := p.parser.Load(); c.fast.Verify(tok, &fc) {
				if decided := c.valid(&fc, now); decided != (want.Decision == core.Allow) {
					t.Errorf("%v: %s: the fast path's checks say %v; golang-jwt gives %s %q", cfg, tok, decided, want.Decision, want.Reason)
				} else if decided {
					fast++
					if res := fastOnly.Authenticate(context.Background(), req); res.Decision != core.Allow || !reflect.DeepEqual(res.Principal, want.Principal) {
						t.Errorf("%v: %s: with golang-jwt refusing all, got %s %q; want the fast path's allow", cfg, tok, res.Decision, res.Reason)
					}
				}
			}
		}
	}
	// 41 when written: each config's valid tokens of the common shape.
	if fast < 40 {
		t.Errorf("%d allowed tokens took the fast path, want every common one", fast)
	}
}
