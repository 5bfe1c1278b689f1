// Package webhook is the built-in authenticator that asks an external
// service: forward authentication, so that an authorization service that
// already guards a deployment's other APIs guards agent-server too.
//
// Two modes:
//
//   - tokenreview: the bearer token of "Authorization: Bearer <token>" is
//     POSTed as a Kubernetes TokenReview (authentication.k8s.io/v1), so an
//     existing TokenReview webhook works unchanged. status.authenticated
//     true allows, with status.user.username as the subject and the values
//     of status.user.extra[scopes_extra_key] as the conversations it may
//     open; false denies.
//   - forward: in the style of nginx auth_request and Traefik ForwardAuth,
//     a GET carries the configured request headers (the plugin's inputs)
//     plus X-Forwarded-Method, X-Forwarded-Uri (the path) and
//     X-Forwarded-For. A 2xx allows, with the subject from subject_header
//     and the conversations from scopes_header (comma or space separated).
//
// In both, 401 and 403 deny; any other status, a redirect, a malformed
// answer and a timeout are Error (503, fail closed). The host caches
// decisions under the plugin's inputs; the service may shorten that with
// Cache-Control: max-age=N, or forbid it with no-store or no-cache. The
// credential is never logged and never put in a reason or an error.
//
// Config (plugins.instances.<name>.config):
//
//	url: https://authn.internal/check   # required
//	mode: tokenreview                  # or forward
//	timeout: 1s                        # each call; auth.rpc_timeout bounds it too
//	ca_file: ""                        # PEM CAs to trust for the service instead of the system's
//	client_cert_file: ""               # PEM client certificate for the service, with
//	client_key_file: ""                #   its key
//	allow_insecure_url: false          # allow http:// (loopback tests only)
//	audiences: []                      # tokenreview: spec.audiences
//	scopes_extra_key: conversations    # tokenreview: status.user.extra key with conversation IDs
//	headers: [Authorization]           # forward: request headers sent (and read)
//	subject_header: X-Auth-Request-User           # forward: response header with the subject
//	scopes_header: X-Auth-Request-Conversations   # forward: response header with conversation IDs
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/bearer"
)

// Version is this plugin's version.
const Version = "1.0.0"

// The modes.
const (
	ModeTokenReview = "tokenreview"
	ModeForward     = "forward"
)

// Defaults for settings left out of the config.
const (
	defaultTimeout        = time.Second
	defaultScopesExtraKey = "conversations"
	defaultSubjectHeader  = "X-Auth-Request-User"
	defaultScopesHeader   = "X-Auth-Request-Conversations"
	maxAnswer             = 1 << 20
)

// Config is the plugin's config.
type Config struct {
	URL              string   `json:"url"`
	Mode             string   `json:"mode"`
	Timeout          string   `json:"timeout"`
	CAFile           string   `json:"ca_file"`
	ClientCertFile   string   `json:"client_cert_file"`
	ClientKeyFile    string   `json:"client_key_file"`
	AllowInsecureURL bool     `json:"allow_insecure_url"`
	Audiences        []string `json:"audiences"`
	ScopesExtraKey   string   `json:"scopes_extra_key"`
	Headers          []string `json:"headers"`
	SubjectHeader    string   `json:"subject_header"`
	ScopesHeader     string   `json:"scopes_header"`
}

// Plugin asks a webhook.
type Plugin struct {
	state atomic.Pointer[state]
}

type state struct {
	cfg    Config
	client *http.Client
}

// New returns an unconfigured webhook plugin.
func New() *Plugin { return &Plugin{} }

// Info declares the plugin. Its inputs depend on its config (the headers it
// forwards): see ConfiguredInputs.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{Name: "webhook", Version: Version, Inputs: plugins.Inputs{Headers: []string{bearer.Header}}}
}

// ConfiguredInputs are the headers the configured mode reads, and in
// forward mode the request line and client it forwards.
func (p *Plugin) ConfiguredInputs() plugins.Inputs {
	st := p.state.Load()
	if st == nil || st.cfg.Mode == ModeTokenReview {
		return plugins.Inputs{Headers: []string{bearer.Header}}
	}
	// Forward mode sends the service the method, path and client address,
	// so that it may decide by them: its decisions are cached by them too.
	return plugins.Inputs{Headers: st.cfg.Headers, Request: true}
}

// Configure checks the config and builds the HTTP client; it does not call
// the service.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	var cfg Config
	if err := req.DecodeConfig(&cfg); err != nil {
		return err
	}
	u, err := url.Parse(cfg.URL)
	switch {
	case err != nil || u.Host == "":
		return fmt.Errorf("url %q: want an absolute URL", cfg.URL)
	case u.Scheme == "http" && !cfg.AllowInsecureURL:
		return fmt.Errorf("url %q is plain http; set allow_insecure_url: true to allow it (loopback tests only)", cfg.URL)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("url %q: want https", cfg.URL)
	}
	switch cfg.Mode {
	case ModeTokenReview:
		if len(cfg.Headers) > 0 || cfg.SubjectHeader != "" || cfg.ScopesHeader != "" {
			return errors.New("headers, subject_header and scopes_header are for mode forward")
		}
		if cfg.ScopesExtraKey == "" {
			cfg.ScopesExtraKey = defaultScopesExtraKey
		}
	case ModeForward:
		if len(cfg.Audiences) > 0 || cfg.ScopesExtraKey != "" {
			return errors.New("audiences and scopes_extra_key are for mode tokenreview")
		}
		if len(cfg.Headers) == 0 {
			cfg.Headers = []string{bearer.Header}
		}
		for i, h := range cfg.Headers {
			if h == "" || strings.ContainsAny(h, " :\r\n") {
				return fmt.Errorf("headers[%d] %q is not a header name", i, h)
			}
			cfg.Headers[i] = http.CanonicalHeaderKey(h)
		}
		cfg.SubjectHeader = orDefault(cfg.SubjectHeader, defaultSubjectHeader)
		cfg.ScopesHeader = orDefault(cfg.ScopesHeader, defaultScopesHeader)
	default:
		return fmt.Errorf("mode %q: want %s or %s", cfg.Mode, ModeTokenReview, ModeForward)
	}
	timeout := defaultTimeout
	if cfg.Timeout != "" {
		if timeout, err = time.ParseDuration(cfg.Timeout); err != nil || timeout <= 0 {
			return fmt.Errorf("timeout %q: want a positive duration like 500ms", cfg.Timeout)
		}
	}
	tlsCfg, err := clientTLS(cfg)
	if err != nil {
		return err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	transport.TLSClientConfig = tlsCfg
	client := &http.Client{
		Timeout:   timeout,
		Transport: transport,
		// A redirect is not an answer: it is an Error, like any other 3xx.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	p.state.Store(&state{cfg: cfg, client: client})
	return nil
}

// clientTLS builds the TLS config for the service: its CAs and the
// plugin's client certificate.
func clientTLS(cfg Config) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	switch {
	case cfg.ClientCertFile != "" && cfg.ClientKeyFile != "":
		c, err := tls.LoadX509KeyPair(cfg.ClientCertFile, cfg.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("client_cert_file and client_key_file: %w", err)
		}
		t.Certificates = []tls.Certificate{c}
	case cfg.ClientCertFile != "" || cfg.ClientKeyFile != "":
		return nil, errors.New("client_cert_file and client_key_file go together")
	}
	return t, nil
}

// Authenticate asks the service about the request's credential.
func (p *Plugin) Authenticate(ctx context.Context, req *core.Request) core.Result {
	st := p.state.Load()
	if st == nil {
		return core.Failed(errors.New("plugin is not configured"))
	}
	if st.cfg.Mode == ModeTokenReview {
		return st.tokenReview(ctx, req)
	}
	return st.forward(ctx, req)
}

// tokenReview is a TokenReview of authentication.k8s.io/v1, as the
// Kubernetes API server sends it to a webhook token authenticator.
type tokenReview struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Spec       tokenReviewSpec   `json:"spec"`
	Status     tokenReviewStatus `json:"status"`
}

type tokenReviewSpec struct {
	Token     string   `json:"token"`
	Audiences []string `json:"audiences,omitempty"`
}

type tokenReviewStatus struct {
	Authenticated bool `json:"authenticated"`
	User          struct {
		Username string              `json:"username"`
		UID      string              `json:"uid"`
		Groups   []string            `json:"groups"`
		Extra    map[string][]string `json:"extra"`
	} `json:"user"`
	Audiences []string `json:"audiences"`
}

func (st *state) tokenReview(ctx context.Context, req *core.Request) core.Result {
	tok := bearer.Token(plugins.HeaderValue(req, bearer.Header))
	if tok == "" {
		return core.Abstained()
	}
	body, err := json.Marshal(tokenReview{
		APIVersion: "authentication.k8s.io/v1",
		Kind:       "TokenReview",
		Spec:       tokenReviewSpec{Token: tok, Audiences: st.cfg.Audiences},
	})
	if err != nil {
		return core.Failed(fmt.Errorf("encode TokenReview: %w", err))
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, st.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return core.Failed(fmt.Errorf("webhook request: %w", err))
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "application/json")
	resp, answer, res, done := st.call(hr)
	if done {
		return res
	}
	var review tokenReview
	if err := json.Unmarshal(answer, &review); err != nil || review.Kind != "TokenReview" {
		return core.Failed(fmt.Errorf("webhook answered %s without a TokenReview", resp.Status))
	}
	s := review.Status
	maxAge := cacheMaxAge(resp.Header)
	switch {
	case !s.Authenticated:
		return withMaxAge(core.Denied("webhook did not authenticate the token"), maxAge)
	case s.User.Username == "":
		return core.Failed(errors.New("webhook authenticated the token without a username"))
	case len(st.cfg.Audiences) > 0 && len(s.Audiences) > 0 && !slices.ContainsFunc(s.Audiences, func(a string) bool { return slices.Contains(st.cfg.Audiences, a) }):
		return withMaxAge(core.Denied("webhook authenticated the token for other audiences"), maxAge)
	}
	pr := &core.Principal{Subject: s.User.Username, Scopes: s.User.Extra[st.cfg.ScopesExtraKey]}
	if s.User.UID != "" || len(s.User.Groups) > 0 {
		pr.Claims = map[string]string{"uid": s.User.UID, "groups": strings.Join(s.User.Groups, ",")}
	}
	return withMaxAge(core.Allowed(pr), maxAge)
}

func (st *state) forward(ctx context.Context, req *core.Request) core.Result {
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, st.cfg.URL, nil)
	if err != nil {
		return core.Failed(fmt.Errorf("webhook request: %w", err))
	}
	found := false
	for _, name := range st.cfg.Headers {
		for _, v := range req.Header.Values(name) {
			if strings.TrimSpace(v) != "" {
				hr.Header.Add(name, v)
				found = true
			}
		}
	}
	if !found {
		return core.Abstained()
	}
	hr.Header.Set("X-Forwarded-Method", req.Method)
	hr.Header.Set("X-Forwarded-Uri", req.Path)
	if host := remoteHost(req.RemoteAddr); host != "" {
		hr.Header.Set("X-Forwarded-For", host)
	}
	resp, _, res, done := st.call(hr)
	if done {
		return res
	}
	maxAge := cacheMaxAge(resp.Header)
	sub := strings.TrimSpace(resp.Header.Get(st.cfg.SubjectHeader))
	if sub == "" {
		return core.Failed(fmt.Errorf("webhook allowed without a %s header", st.cfg.SubjectHeader))
	}
	pr := &core.Principal{Subject: sub}
	if v := resp.Header.Get(st.cfg.ScopesHeader); v != "" {
		pr.Scopes = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
	}
	return withMaxAge(core.Allowed(pr), maxAge)
}

// call sends hr. When done, res is the decision (a deny on 401 or 403, an
// error on any other failure); otherwise the status was 2xx and answer is
// the body.
func (st *state) call(hr *http.Request) (resp *http.Response, answer []byte, res core.Result, done bool) {
	resp, err := st.client.Do(hr)
	if err != nil {
		// The error names the URL and the failure, never a header.
		return nil, nil, core.Failed(fmt.Errorf("webhook unreachable: %w", err)), true
	}
	defer resp.Body.Close()
	answer, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return resp, nil, withMaxAge(core.Denied("webhook refused the credential ("+strconv.Itoa(resp.StatusCode)+")"), cacheMaxAge(resp.Header)), true
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return resp, nil, core.Failed(fmt.Errorf("webhook answered %s", resp.Status)), true
	case err != nil:
		return resp, nil, core.Failed(fmt.Errorf("read the webhook's answer: %w", err)), true
	}
	return resp, answer, core.Result{}, false
}

// cacheMaxAge reads Cache-Control: no-store and no-cache forbid caching
// (-1), max-age=N bounds it (0 also forbids), anything else leaves the
// host's TTL (0).
func cacheMaxAge(h http.Header) time.Duration {
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			switch {
			case d == "no-store" || d == "no-cache":
				return -1
			case strings.HasPrefix(d, "max-age="):
				n, err := strconv.Atoi(strings.TrimPrefix(d, "max-age="))
				if err != nil || n < 0 {
					continue
				}
				if n == 0 {
					return -1
				}
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}

func withMaxAge(r core.Result, d time.Duration) core.Result {
	r.MaxAge = d
	return r
}

func remoteHost(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

var (
	_ plugins.Plugin           = (*Plugin)(nil)
	_ plugins.InputsConfigurer = (*Plugin)(nil)
)
