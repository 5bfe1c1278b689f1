package query

import (
	"context"
	"net/url"
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
	p := configured(t, "k", "a+b")
	tests := []struct {
		raw  string
		want core.Decision
	}{
		{"", core.Abstain},
		{"session_api_key=", core.Abstain},
		{"other=k", core.Abstain},
		{"session_api_key=k", core.Allow},
		{"session_api_key=k&session_api_key=x", core.Allow}, // the first value counts
		{"session_api_key=x", core.Deny},
		{"session_api_key=a+b", core.Allow},   // '+' sent raw stays '+'
		{"session_api_key=a%2Bb", core.Allow}, // and so does %2B
		{"session_api_key=a%20b", core.Deny},  // a space is not a plus
		{"SESSION_API_KEY=k", core.Abstain},   // parameter names are exact
		{"session_api_key=%zz", core.Abstain}, // malformed pairs are dropped
	}
	for _, tc := range tests {
		req := &core.Request{Query: core.ParseQuery(tc.raw)}
		if got := p.Authenticate(context.Background(), req); got.Decision != tc.want {
			t.Errorf("%q: got %s, want %s", tc.raw, got.Decision, tc.want)
		}
	}
}

func TestInfo(t *testing.T) {
	info := New().Info(context.Background())
	if !info.WantsKeys || len(info.Inputs.QueryParams) != 1 || info.Inputs.QueryParams[0] != Param {
		t.Errorf("Info = %+v", info)
	}
}

// FuzzQuery checks the query parsing: no panic, an empty key abstains, and a
// key sent escaped is found again exactly and matches only itself.
func FuzzQuery(f *testing.F) {
	for _, s := range []string{"k", "a+b", "a b", "%2B", "&=;", "", "ü+/="} {
		f.Add(s, "session_api_key="+s)
	}
	p := configured(f, "fuzz-key+/=")
	f.Fuzz(func(t *testing.T, key, raw string) {
		// Arbitrary raw queries must never panic or allow a wrong key.
		res := p.Authenticate(context.Background(), &core.Request{Query: core.ParseQuery(raw)})
		cred := Credential(&core.Request{Query: core.ParseQuery(raw)})
		switch {
		case cred == "" && res.Decision != core.Abstain:
			t.Fatalf("%q: empty credential gave %s", raw, res.Decision)
		case cred != "" && (res.Decision == core.Allow) != (cred == "fuzz-key+/="):
			t.Fatalf("%q: credential %q gave %s", raw, cred, res.Decision)
		}
		// A key escaped by a client comes back exactly.
		esc := strings.ReplaceAll(url.QueryEscape(key), "+", "%20")
		got := Credential(&core.Request{Query: core.ParseQuery("x=1&" + Param + "=" + esc)})
		if got != key {
			t.Fatalf("key %q sent as %q came back as %q", key, esc, got)
		}
	})
}
