// Package mtls is the built-in authenticator for client certificates: it
// maps the certificate the server's TLS handshake verified (server.tls with
// client_auth request or require) to a principal by rules on its subject
// common name and its DNS and URI SANs, SPIFFE IDs included.
//
// A certificate that failed verification ended its handshake and never
// reaches this plugin. A request without a certificate is skipped by the
// host; a certificate that no rule admits is denied. The principal expires
// at the certificate's NotAfter, so its socket closes with 4001 "Credential
// expired" then.
//
// Config (plugins.instances.mtls.config): rules, tried in order; the first
// whose every given field matches decides. A field is a pattern where *
// matches within one URI path segment, one DNS label, or any part of a
// common name (path.Match syntax otherwise).
//
//	rules:
//	  - uri: spiffe://example.org/ns/prod/sa/*   # a URI SAN, e.g. a SPIFFE ID
//	    scopes: [<conversation id>, ...]        # optional: the only conversations it may open
//	  - dns: "*.agents.example.org"              # a DNS SAN
//	  - cn: ops-*                                # the subject common name
//
// The subject is the matched URI SAN, else the matched DNS SAN, else
// "cn:" and the common name.
package mtls

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync/atomic"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
)

// Version is this plugin's version.
const Version = "1.0.0"

// Config is the plugin's config.
type Config struct {
	Rules []Rule `json:"rules"`
}

// Rule admits certificates whose given fields all match.
type Rule struct {
	CN     string   `json:"cn"`
	DNS    string   `json:"dns"`
	URI    string   `json:"uri"`
	Scopes []string `json:"scopes"`
}

// Plugin maps verified client certificates to principals.
type Plugin struct {
	rules atomic.Pointer[[]Rule]
}

// New returns an unconfigured mtls plugin.
func New() *Plugin { return &Plugin{} }

// Info declares the plugin; its one input is the client certificate.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{Name: "mtls", Version: Version, Inputs: plugins.Inputs{ClientCertificate: true}}
}

// Configure checks the rules: at least one, each with a field, every
// pattern well-formed.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	var cfg Config
	if err := req.DecodeConfig(&cfg); err != nil {
		return err
	}
	if len(cfg.Rules) == 0 {
		return errors.New("rules: at least one rule is needed; without, no certificate is admitted")
	}
	for i, r := range cfg.Rules {
		if r.CN == "" && r.DNS == "" && r.URI == "" {
			return fmt.Errorf("rules[%d]: set cn, dns or uri", i)
		}
		for _, pat := range []string{r.CN, r.DNS, r.URI} {
			if _, err := path.Match(pat, ""); err != nil {
				return fmt.Errorf("rules[%d]: pattern %q: %w", i, pat, err)
			}
		}
		if r.URI != "" && !strings.Contains(r.URI, ":") {
			return fmt.Errorf("rules[%d]: uri %q: want a URI such as spiffe://trust-domain/path", i, r.URI)
		}
	}
	p.rules.Store(&cfg.Rules)
	return nil
}

// Authenticate admits the leaf certificate by the first matching rule.
func (p *Plugin) Authenticate(_ context.Context, req *core.Request) core.Result {
	rules := p.rules.Load()
	if rules == nil {
		return core.Failed(errors.New("plugin is not configured"))
	}
	if len(req.ClientCertificates) == 0 {
		return core.Abstained()
	}
	leaf := req.ClientCertificates[0]
	for _, r := range *rules {
		if subject, ok := r.admit(leaf); ok {
			return core.Allowed(&core.Principal{
				Subject: subject,
				Scopes:  r.Scopes,
				Claims:  map[string]string{"cn": leaf.Subject.CommonName, "serial": leaf.SerialNumber.Text(16)},
				Expiry:  leaf.NotAfter,
			})
		}
	}
	return core.Denied("client certificate not admitted by any rule")
}

// admit reports whether every field r sets matches c, and the subject.
func (r Rule) admit(c *x509.Certificate) (string, bool) {
	var uri, dns string
	if r.URI != "" {
		for _, u := range c.URIs {
			if glob(r.URI, u.String(), '/') {
				uri = u.String()
				break
			}
		}
		if uri == "" {
			return "", false
		}
	}
	if r.DNS != "" {
		for _, d := range c.DNSNames {
			if glob(strings.ToLower(r.DNS), strings.ToLower(d), '.') {
				dns = d
				break
			}
		}
		if dns == "" {
			return "", false
		}
	}
	if r.CN != "" && !glob(r.CN, c.Subject.CommonName, 0) {
		return "", false
	}
	switch {
	case uri != "":
		return uri, true
	case dns != "":
		return dns, true
	}
	return "cn:" + c.Subject.CommonName, true
}

// glob matches name against pattern with path.Match, where * stops at sep
// (0: no separator).
func glob(pattern, name string, sep byte) bool {
	switch sep {
	case 0:
		// Without a separator, * must cross everything: no byte of a
		// common name is '/' to path.Match once they are swapped out.
		pattern, name = strings.ReplaceAll(pattern, "/", "\x00"), strings.ReplaceAll(name, "/", "\x00")
	case '.':
		pattern, name = swapSep(pattern), swapSep(name)
	}
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

// swapSep exchanges '.' and '/' so that path.Match's * stops at a DNS label.
func swapSep(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, s)
}

var _ plugins.Plugin = (*Plugin)(nil)
