package header

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
		name   string
		header http.Header
		want   core.Decision
	}{
		{"absent", http.Header{}, core.Abstain},
		{"empty", http.Header{"X-Session-Api-Key": {""}}, core.Abstain},
		{"blank", http.Header{"X-Session-Api-Key": {"  \t"}}, core.Abstain},
		{"valid", http.Header{"X-Session-Api-Key": {"k"}}, core.Allow},
		{"padded", http.Header{"X-Session-Api-Key": {"  k \t"}}, core.Allow},
		{"lower-case name, hand-built header", http.Header{"x-session-api-key": {"k"}}, core.Allow},
		{"upper-case name, hand-built header", http.Header{"X-SESSION-API-KEY": {"k"}}, core.Allow},
		{"wrong", http.Header{"X-Session-Api-Key": {"K"}}, core.Deny},
		{"other header", http.Header{"Authorization": {"Bearer k"}}, core.Abstain},
	}
	for _, tc := range tests {
		got := p.Authenticate(context.Background(), &core.Request{Header: tc.header})
		if got.Decision != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got.Decision, tc.want)
		}
	}
	// net/http canonicalises any case on the wire.
	h := http.Header{}
	h.Set("x-SESSION-api-KEY", "k")
	if got := p.Authenticate(context.Background(), &core.Request{Header: h}); got.Decision != core.Allow {
		t.Errorf("mixed-case wire name: got %s", got.Decision)
	}
}

// FuzzHeader checks the header parsing: a blank value abstains, otherwise
// the trimmed value is the credential and only the real key is allowed.
func FuzzHeader(f *testing.F) {
	for _, s := range []string{"k", " k ", "", "\t", "k k", "\x00"} {
		f.Add(s)
	}
	p := configured(f, "k")
	f.Fuzz(func(t *testing.T, v string) {
		res := p.Authenticate(context.Background(), &core.Request{Header: http.Header{"X-Session-Api-Key": {v}}})
		cred := Credential(v)
		if cred != strings.TrimSpace(cred) {
			t.Fatalf("%q: credential %q is not trimmed", v, cred)
		}
		switch {
		case cred == "" && res.Decision != core.Abstain:
			t.Fatalf("%q: blank value gave %s", v, res.Decision)
		case cred != "" && (res.Decision == core.Allow) != (cred == "k"):
			t.Fatalf("%q: gave %s", v, res.Decision)
		}
	})
}
