package subprotocol

import (
	"context"
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
	const key = "k+/=y"
	p := configured(t, key)
	tests := []struct {
		name    string
		offered []string
		want    core.Decision
	}{
		{"protocol and token", []string{Protocol, Entry(key)}, core.Allow},
		{"token first", []string{Entry(key), Protocol}, core.Allow},
		{"with another protocol", []string{"chat", Protocol, Entry(key)}, core.Allow},
		{"wrong key", []string{Protocol, Entry("nope")}, core.Deny},
		{"no real protocol", []string{Entry(key)}, core.Deny},
		{"only another protocol", []string{"chat", Entry(key)}, core.Deny},
		{"duplicate token", []string{Protocol, Entry(key), Entry(key)}, core.Deny},
		{"two different tokens", []string{Protocol, Entry(key), Entry("other")}, core.Deny},
		{"padded base64", []string{Protocol, TokenPrefix + "aw=="}, core.Deny},
		{"standard alphabet", []string{Protocol, TokenPrefix + "a+/"}, core.Deny},
		{"empty token", []string{Protocol, TokenPrefix}, core.Deny},
		{"foreign bearer family", []string{Protocol, "base64url.bearer.authorization.k8s.io.aw"}, core.Deny},
		{"upper-case family", []string{Protocol, "BASE64URL.BEARER.agent-server.aw"}, core.Deny},
		{"control bytes in key", []string{Protocol, Entry("a\nb")}, core.Deny},
		{"line break in the encoding", []string{Protocol, Entry(key)[:len(TokenPrefix)+2] + "\r\n" + Entry(key)[len(TokenPrefix)+2:]}, core.Deny},
		{"protocol only", []string{Protocol}, core.Abstain},
		{"a JWT is for oidc", []string{Protocol, Entry("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln")}, core.Abstain},
		{"nothing", nil, core.Abstain},
		{"other protocols", []string{"chat", "v2"}, core.Abstain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := p.Authenticate(context.Background(), &core.Request{Subprotocols: tc.offered})
			if got.Decision != tc.want {
				t.Fatalf("got %s (%s), want %s", got.Decision, got.Reason, tc.want)
			}
			if strings.Contains(got.Reason, key) {
				t.Errorf("reason %q contains the key", got.Reason)
			}
		})
	}
}

// FuzzToken checks that a token is only ever found in a single well-formed
// entry next to the real protocol, and that it round-trips through Entry.
func FuzzToken(f *testing.F) {
	for _, s := range []string{Entry("k"), TokenPrefix, TokenPrefix + "!!", "base64url.bearer.x"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, entry string, withProtocol bool) {
		offered := []string{entry}
		if withProtocol {
			offered = append(offered, Protocol)
		}
		key, found, reason := Token(offered)
		if !found && (key != "" || reason != "") {
			t.Fatalf("%q: not found but key %q reason %q", entry, key, reason)
		}
		if found && reason == "" {
			if !withProtocol {
				t.Fatalf("%q: accepted without %s", entry, Protocol)
			}
			if Entry(key) != entry {
				t.Fatalf("%q: key does not round-trip", entry)
			}
		}
	})
}
