package firstmessage

import (
	"context"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
)

func TestAuthenticate(t *testing.T) {
	const key = "k\"ey+/"
	d, err := plugins.KeyDigests([]string{key})
	if err != nil {
		t.Fatal(err)
	}
	p := New()
	if err := p.Configure(context.Background(), plugins.ConfigureRequest{KeyDigests: d}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		frame string
		want  core.Decision
	}{
		{"auth frame", `{"type":"auth","session_api_key":"k\"ey+/"}`, core.Allow},
		{"extra fields", `{"type":"auth","session_api_key":"k\"ey+/","v":1}`, core.Allow},
		{"wrong key", `{"type":"auth","session_api_key":"nope"}`, core.Deny},
		{"wrong type", `{"type":"message","session_api_key":"k\"ey+/"}`, core.Deny},
		{"no type", `{"session_api_key":"k\"ey+/"}`, core.Deny},
		{"no key", `{"type":"auth"}`, core.Deny},
		{"empty key", `{"type":"auth","session_api_key":""}`, core.Deny},
		{"key not a string", `{"type":"auth","session_api_key":1}`, core.Deny},
		{"malformed JSON", `{"type":"auth",`, core.Deny},
		{"a user message", `{"role":"user","content":"hi"}`, core.Deny},
		{"not an object", `"auth"`, core.Deny},
		{"empty", ``, core.Abstain},
		{"blank", "  \n", core.Abstain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := p.Authenticate(context.Background(), &core.Request{FirstMessage: []byte(tc.frame)})
			if got.Decision != tc.want {
				t.Fatalf("got %s (%s), want %s", got.Decision, got.Reason, tc.want)
			}
			if strings.Contains(got.Reason, "ey+/") {
				t.Errorf("reason %q contains the key", got.Reason)
			}
		})
	}
}
