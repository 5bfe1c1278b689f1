package bearer

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
)

func configured(t testing.TB, keys ...string) *Plugin {
	t.Helper()
	d, err := plugins.KeyDigests(keys)
	if err != nil {
		t.Fatal(err)
	}
	p := New()
	if err := p.Configure(context.Background(), plugins.ConfigureRequest{KeyDigests: d}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthenticate(t *testing.T) {
	p := configured(t, "k")
	tests := []struct {
		value string
		want  core.Decision
	}{
		{"Bearer k", core.Allow},
		{"bearer k", core.Allow},
		{"BEARER k", core.Allow},
		{"  Bearer   k  ", core.Allow},
		{"Bearer\tk", core.Allow},
		{"Bearer x", core.Deny},
		{"Bearer k extra", core.Deny},
		{"Bearer", core.Abstain},
		{"Bearer ", core.Abstain},
		{"Bearer    ", core.Abstain},
		{"Basic dXNlcjpwYXNz", core.Abstain},
		{"Bearerk", core.Abstain},
		{"Token k", core.Abstain},
		{"", core.Abstain},
		// A JWT is for jwt or oidc, which share the header.
		{"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", core.Abstain},
		{"Bearer a.b.c", core.Deny}, // dotted, but not a JWT
	}
	for _, tc := range tests {
		req := &core.Request{Header: http.Header{"Authorization": {tc.value}}}
		if got := p.Authenticate(context.Background(), req); got.Decision != tc.want {
			t.Errorf("%q: got %s, want %s", tc.value, got.Decision, tc.want)
		}
	}
	if got := p.Authenticate(context.Background(), &core.Request{}); got.Decision != core.Abstain {
		t.Errorf("no header: got %s", got.Decision)
	}
}

// FuzzBearer checks the Authorization parsing: a token is found only after
// a "bearer" scheme in any case, is trimmed and non-empty, and only the real
// key is allowed.
func FuzzBearer(f *testing.F) {
	for _, s := range []string{"Bearer k", "bearer  k", "Basic x", "Bearer", "Bearer\t", " Bearer k ", "BEARER\tk\t"} {
		f.Add(s)
	}
	p := configured(f, "k")
	f.Fuzz(func(t *testing.T, v string) {
		tok := Token(v)
		if tok != "" {
			if tok != strings.TrimSpace(tok) {
				t.Fatalf("%q: token %q is not trimmed", v, tok)
			}
			if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(v)), "bearer") {
				t.Fatalf("%q: token %q without a bearer scheme", v, tok)
			}
			if !strings.HasSuffix(strings.TrimSpace(v), tok) {
				t.Fatalf("%q: token %q is not the value's tail", v, tok)
			}
		}
		res := p.Authenticate(context.Background(), &core.Request{Header: http.Header{"Authorization": {v}}})
		switch {
		case tok == "" && res.Decision != core.Abstain:
			t.Fatalf("%q: no token gave %s", v, res.Decision)
		case tok != "" && (res.Decision == core.Allow) != (tok == "k"):
			t.Fatalf("%q: gave %s", v, res.Decision)
		}
	})
}
