package mtls

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/tests/testcert"
)

func configured(t *testing.T, cfg string) *Plugin {
	t.Helper()
	p := New()
	if err := p.Configure(context.Background(), plugins.ConfigureRequest{Config: json.RawMessage(cfg)}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthenticate(t *testing.T) {
	p := configured(t, `{"rules":[
		{"uri":"spiffe://example.org/ns/prod/sa/*","scopes":["conv-1"]},
		{"dns":"*.agents.example.org","cn":"agent-*"},
		{"cn":"ops-*"}
	]}`)
	ca := testcert.NewCA(t, "ca")
	notAfter := time.Now().Add(time.Hour).Truncate(time.Second)
	cert := func(s testcert.Spec) []*x509.Certificate {
		s.Client, s.NotAfter = true, notAfter
		return []*x509.Certificate{ca.Issue(t, s).Cert, ca.Cert}
	}
	tests := []struct {
		name    string
		chain   []*x509.Certificate
		want    core.Decision
		subject string
		scopes  []string
	}{
		{"SPIFFE ID", cert(testcert.Spec{CommonName: "x", URIs: []string{"spiffe://example.org/ns/prod/sa/builder"}}), core.Allow, "spiffe://example.org/ns/prod/sa/builder", []string{"conv-1"}},
		{"SPIFFE ID in another namespace", cert(testcert.Spec{CommonName: "x", URIs: []string{"spiffe://example.org/ns/dev/sa/builder"}}), core.Deny, "", nil},
		{"* stays in one path segment", cert(testcert.Spec{CommonName: "x", URIs: []string{"spiffe://example.org/ns/prod/sa/a/b"}}), core.Deny, "", nil},
		{"DNS and CN", cert(testcert.Spec{CommonName: "agent-7", DNS: []string{"a7.agents.example.org"}}), core.Allow, "a7.agents.example.org", nil},
		{"DNS case-insensitive", cert(testcert.Spec{CommonName: "agent-7", DNS: []string{"A7.Agents.Example.org"}}), core.Allow, "A7.Agents.Example.org", nil},
		{"DNS without the CN the rule needs", cert(testcert.Spec{CommonName: "intruder", DNS: []string{"a7.agents.example.org"}}), core.Deny, "", nil},
		{"* stays in one DNS label", cert(testcert.Spec{CommonName: "agent-7", DNS: []string{"x.a7.agents.example.org"}}), core.Deny, "", nil},
		{"CN", cert(testcert.Spec{CommonName: "ops-alice"}), core.Allow, "cn:ops-alice", nil},
		{"CN with a slash", cert(testcert.Spec{CommonName: "ops-a/b"}), core.Allow, "cn:ops-a/b", nil},
		{"nothing matches", cert(testcert.Spec{CommonName: "guest"}), core.Deny, "", nil},
		{"no certificate", nil, core.Abstain, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := p.Authenticate(context.Background(), &core.Request{ClientCertificates: tc.chain})
			if res.Decision != tc.want {
				t.Fatalf("got %s %q, want %s", res.Decision, res.Reason, tc.want)
			}
			if tc.want != core.Allow {
				return
			}
			pr := res.Principal
			if pr.Subject != tc.subject || strings.Join(pr.Scopes, ",") != strings.Join(tc.scopes, ",") || !pr.Expiry.Equal(notAfter) {
				t.Errorf("principal = %+v, want subject %q scopes %v expiry %s", pr, tc.subject, tc.scopes, notAfter)
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	for cfg, want := range map[string]string{
		`{}`:                              "at least one rule",
		`{"rules":[{"scopes":["c"]}]}`:    "set cn, dns or uri",
		`{"rules":[{"cn":"a["}]}`:         "pattern",
		`{"rules":[{"uri":"no-scheme"}]}`: "want a URI",
		`{"rules":[{"subject":"x"}]}`:     "unknown field",
	} {
		err := New().Configure(context.Background(), plugins.ConfigureRequest{Config: json.RawMessage(cfg)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", cfg, err, want)
		}
	}
	if res := New().Authenticate(context.Background(), &core.Request{}); res.Decision != core.Error {
		t.Errorf("unconfigured: got %s, want error", res.Decision)
	}
}
