// Package oidc is the built-in authenticator for tokens from an OpenID
// Connect identity provider (Google, Okta, Keycloak, Auth0, Dex, Zitadel,
// ...): JSON Web Tokens signed with the provider's published keys.
//
// It reads the token from "Authorization: Bearer <token>" and from the
// subprotocol entry "base64url.bearer.agent-server.<base64url(token)>" next
// to agent-server.v1, so a browser can use an IdP token without putting it
// in a URL. It abstains on a token that is not a JWT and on one whose iss
// is not its issuer, so it shares the header with bearer and jwt in any
// order, and several issuers are several instances of this one binary
// (plugins.instances.<name>.path).
//
// Keys come from the issuer's /.well-known/openid-configuration (jwks_uri)
// or from jwks_url. They are fetched again every refresh_interval and when
// a token names a key id the plugin does not hold, at most once per
// min_refresh_interval however many such tokens arrive. While the provider
// is unreachable the keys already held keep working; a token that cannot be
// checked without a fetch is an Error (503, fail closed), never an Allow
// and never a cached Deny, and counts toward auth.failures_per_minute.
//
// It verifies the signature (RS*, PS*, ES* and EdDSA; HS* only with
// hmac_secret; never none), iss, aud, exp (required) and nbf, with leeway
// for clock skew. The principal's subject is subject_claim, its scopes (the
// conversations it may open) scopes_claim, its expiry exp: the socket
// closes with 4001 "Credential expired" then. required_claims restricts whom
// it admits.
//
// Config (plugins.instances.<name>.config):
//
//	issuer: https://accounts.example.com  # required; iss must equal it
//	audience: agent-server                # required; a string or a list, aud must hold one
//	jwks_url: ""                          # optional: skip discovery
//	allow_insecure_issuer: false          # allow http:// URLs (loopback tests only)
//	ca_file: ""                           # PEM CAs to trust for the provider instead of the system's
//	algorithms: [RS256, ES256, EdDSA]     # accepted signature algorithms
//	hmac_secret: ""                       # the client secret, for HS256/384/512 listed in algorithms
//	leeway: 30s                           # clock skew allowed on exp and nbf
//	subject_claim: sub
//	scopes_claim: conversations           # a list of conversation IDs, or a space-separated string
//	required_claims: {}                   # claim -> accepted values, e.g. {groups: [agent-users]}
//	refresh_interval: 1h                  # fetch the keys this often
//	min_refresh_interval: 30s             # at most one fetch per this for unknown key ids
//	http_timeout: 5s                      # each discovery or JWKS request
package oidc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/bearer"
	"github.com/agent-server/agent-server/plugins/internal/jwttoken"
	"github.com/agent-server/agent-server/plugins/subprotocol"
)

// Version is this plugin's version.
const Version = "1.0.0"

// Defaults for settings left out of the config.
const (
	defaultLeeway             = 30 * time.Second
	defaultRefreshInterval    = time.Hour
	defaultMinRefreshInterval = 30 * time.Second
	defaultHTTPTimeout        = 5 * time.Second
	// initialKeyWait bounds how long Configure waits for the first keys;
	// the fetch goes on after it.
	initialKeyWait      = 2 * time.Second
	defaultSubjectClaim = "sub"
	defaultScopesClaim  = "conversations"
	minHMACSecret       = 32
)

// defaultAlgorithms are accepted when algorithms is not set.
var defaultAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// asymmetric are the public-key algorithms golang-jwt verifies.
var asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config is the plugin's config.
type Config struct {
	Issuer              string              `json:"issuer"`
	Audience            Audience            `json:"audience"`
	JWKSURL             string              `json:"jwks_url"`
	AllowInsecureIssuer bool                `json:"allow_insecure_issuer"`
	CAFile              string              `json:"ca_file"`
	Algorithms          []string            `json:"algorithms"`
	HMACSecret          string              `json:"hmac_secret"`
	Leeway              string              `json:"leeway"`
	SubjectClaim        string              `json:"subject_claim"`
	ScopesClaim         string              `json:"scopes_claim"`
	RequiredClaims      map[string][]string `json:"required_claims"`
	RefreshInterval     string              `json:"refresh_interval"`
	MinRefreshInterval  string              `json:"min_refresh_interval"`
	HTTPTimeout         string              `json:"http_timeout"`
}

// Audience is one audience or a list of them.
type Audience []string

// UnmarshalJSON accepts a string or a list of strings.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("audience: want a string or a list of strings")
	}
	*a = many
	return nil
}

// Plugin verifies one issuer's tokens.
type Plugin struct {
	now   func() time.Time
	log   *slog.Logger
	state atomic.Pointer[state]

	mu     sync.Mutex // serializes Configure
	raw    []byte     // the config state was built from
	cancel context.CancelFunc
}

// state is everything Configure derives from one config.
type state struct {
	issuer   string
	algs     []string
	hmac     []byte
	subject  string
	scopes   string
	required map[string][]string
	parser   *jwtlib.Parser
	keys     *keySource
}

// New returns an unconfigured oidc plugin.
func New() *Plugin { return &Plugin{now: time.Now, log: plugins.Logger()} }

// Info declares the plugin: it reads the Authorization header and the
// offered subprotocols.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{
		Name:    "oidc",
		Version: Version,
		Inputs:  plugins.Inputs{Headers: []string{bearer.Header}, Subprotocol: true},
	}
}

// Configure checks the config and fetches the issuer's keys once. An
// unreachable provider does not fail it: requests fail closed until the
// keys arrive. A config identical to the running one keeps its keys.
func (p *Plugin) Configure(ctx context.Context, req plugins.ConfigureRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	raw := []byte(req.Config)
	if p.state.Load() != nil && bytes.Equal(raw, p.raw) {
		return nil
	}
	var cfg Config
	if err := req.DecodeConfig(&cfg); err != nil {
		return err
	}
	st, refresh, err := p.build(cfg)
	if err != nil {
		return err
	}
	if p.cancel != nil {
		p.cancel()
	}
	rctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.raw = cancel, raw
	p.state.Store(st)
	go st.keys.run(rctx, refresh)
	// Wait a little for the first keys, but answer well within the host's
	// deadline: a slow provider must not fail the server's boot.
	wait := initialKeyWait
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d)/2)
	}
	wctx, wcancel := context.WithTimeout(ctx, wait)
	defer wcancel()
	if err := st.keys.refresh(wctx); err != nil {
		p.log.Warn("the identity provider's keys are not available yet; its tokens fail closed until they are", "issuer", st.issuer, "error", err)
	}
	return nil
}

// build checks cfg and derives the state, without any network access.
func (p *Plugin) build(cfg Config) (*state, time.Duration, error) {
	if err := checkURL("issuer", cfg.Issuer, cfg.AllowInsecureIssuer); err != nil {
		return nil, 0, err
	}
	if cfg.JWKSURL != "" {
		if err := checkURL("jwks_url", cfg.JWKSURL, cfg.AllowInsecureIssuer); err != nil {
			return nil, 0, err
		}
	}
	if len(cfg.Audience) == 0 || slices.Contains(cfg.Audience, "") {
		return nil, 0, errors.New("audience is required: the client ID (or IDs) the provider issues tokens for")
	}
	st := &state{
		issuer:   cfg.Issuer,
		subject:  orDefault(cfg.SubjectClaim, defaultSubjectClaim),
		scopes:   orDefault(cfg.ScopesClaim, defaultScopesClaim),
		required: cfg.RequiredClaims,
	}
	st.algs = cfg.Algorithms
	if len(st.algs) == 0 {
		st.algs = defaultAlgorithms
	}
	hmacListed := false
	for _, a := range st.algs {
		switch {
		case strings.EqualFold(a, "none"):
			return nil, 0, errors.New(`algorithms: "none" is never accepted`)
		case a == "HS256" || a == "HS384" || a == "HS512":
			hmacListed = true
		case !slices.Contains(asymmetric, a):
			return nil, 0, fmt.Errorf("algorithms: unknown algorithm %q; want some of %s or HS256/HS384/HS512", a, strings.Join(asymmetric, ", "))
		}
	}
	switch {
	case hmacListed && len(cfg.HMACSecret) < minHMACSecret:
		return nil, 0, fmt.Errorf("algorithms lists an HS algorithm: hmac_secret must be at least %d bytes", minHMACSecret)
	case !hmacListed && cfg.HMACSecret != "":
		return nil, 0, errors.New("hmac_secret is set but algorithms lists no HS algorithm")
	}
	st.hmac = []byte(cfg.HMACSecret)
	for claim, values := range cfg.RequiredClaims {
		if claim == "" || len(values) == 0 {
			return nil, 0, fmt.Errorf("required_claims: claim %q needs at least one accepted value", claim)
		}
	}
	var leeway, refresh, minRefresh, timeout time.Duration
	for _, d := range []struct {
		key, value string
		def        time.Duration
		out        *time.Duration
		zeroOK     bool
	}{
		{"leeway", cfg.Leeway, defaultLeeway, &leeway, true},
		{"refresh_interval", cfg.RefreshInterval, defaultRefreshInterval, &refresh, false},
		{"min_refresh_interval", cfg.MinRefreshInterval, defaultMinRefreshInterval, &minRefresh, false},
		{"http_timeout", cfg.HTTPTimeout, defaultHTTPTimeout, &timeout, false},
	} {
		v := d.def
		if d.value != "" {
			var err error
			if v, err = time.ParseDuration(d.value); err != nil || v < 0 || (v == 0 && !d.zeroOK) {
				return nil, 0, fmt.Errorf("%s %q: want a positive duration like 30s", d.key, d.value)
			}
		}
		*d.out = v
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, 0, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, 0, fmt.Errorf("ca_file %s holds no PEM certificate", cfg.CAFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	st.keys = &keySource{
		client:      &http.Client{Timeout: timeout, Transport: transport},
		issuer:      cfg.Issuer,
		jwksURL:     cfg.JWKSURL,
		insecure:    cfg.AllowInsecureIssuer,
		minInterval: minRefresh,
		log:         p.log,
		now:         p.now,
	}
	st.parser = jwtlib.NewParser(
		jwtlib.WithValidMethods(st.algs),
		jwtlib.WithIssuer(cfg.Issuer),
		jwtlib.WithAudience(cfg.Audience...),
		jwtlib.WithExpirationRequired(),
		jwtlib.WithLeeway(leeway),
		jwtlib.WithTimeFunc(p.now),
	)
	return st, refresh, nil
}

// Authenticate abstains on a token that is not its issuer's JWT, denies one
// that fails a check, allows a valid one, and fails closed (Error) when the
// token names a key that cannot be fetched now.
func (p *Plugin) Authenticate(ctx context.Context, req *core.Request) core.Result {
	st := p.state.Load()
	if st == nil {
		return core.Failed(errors.New("plugin is not configured"))
	}
	tok, shape, ok := st.token(req)
	if !ok {
		return core.Abstained()
	}
	if !slices.Contains(st.algs, shape.Alg) {
		// Before any key lookup: alg none or a foreign alg never costs a fetch.
		return core.Denied("token signing method not accepted")
	}
	var keyfn jwtlib.Keyfunc
	if strings.HasPrefix(shape.Alg, "HS") {
		keyfn = func(*jwtlib.Token) (any, error) { return st.hmac, nil }
	} else {
		ks, fresh, err := st.keys.keysFor(ctx, shape.Kid)
		switch {
		case errors.Is(err, errTooSoon):
			return core.FailedByRequest(errors.New("token names a signing key the issuer's key set lacks, and that set was fetched too recently to fetch it again"))
		case err != nil:
			return core.FailedByRequest(fmt.Errorf("token names a signing key not held, and the issuer's keys could not be fetched: %w", err))
		case fresh && shape.Kid != "" && !ks.has(shape.Kid):
			return core.Denied("token signed with a key the issuer does not publish")
		}
		keyfn = ks.kf.Keyfunc
	}
	claims := jwtlib.MapClaims{}
	if _, err := st.parser.ParseWithClaims(tok, claims, keyfn); err != nil {
		return core.Denied(jwttoken.DenyReason(err))
	}
	return st.principal(claims)
}

// token finds this issuer's JWT in the Authorization header or in the
// subprotocol entry.
func (st *state) token(req *core.Request) (string, jwttoken.Shape, bool) {
	if tok := bearer.Token(plugins.HeaderValue(req, bearer.Header)); tok != "" {
		if s, ok := jwttoken.Inspect(tok); ok && s.Issuer == st.issuer {
			return tok, s, true
		}
	}
	// A malformed, duplicated or unaccompanied entry is the subprotocol
	// plugin's to deny.
	if tok, found, reason := subprotocol.Token(req.Subprotocols); found && reason == "" {
		if s, ok := jwttoken.Inspect(tok); ok && s.Issuer == st.issuer {
			return tok, s, true
		}
	}
	return "", jwttoken.Shape{}, false
}

// principal maps verified claims to the principal, or denies when the
// claims lack the subject, hold malformed scopes or fail required_claims.
// Reasons never quote a claim's value.
func (st *state) principal(claims jwtlib.MapClaims) core.Result {
	sub, _ := claims[st.subject].(string)
	if sub == "" {
		return core.Denied("token has no " + st.subject + " claim")
	}
	for claim, accepted := range st.required {
		if !claimHolds(claims[claim], accepted) {
			return core.Denied("token lacks a required value of claim " + claim)
		}
	}
	pr := &core.Principal{Subject: sub, Claims: map[string]string{"iss": st.issuer}}
	switch v := claims[st.scopes].(type) {
	case nil:
	case string:
		pr.Scopes = strings.Fields(v)
	case []any:
		for _, s := range v {
			id, ok := s.(string)
			if !ok {
				return core.Denied("claim " + st.scopes + " is not a list of strings")
			}
			pr.Scopes = append(pr.Scopes, id)
		}
	default:
		return core.Denied("claim " + st.scopes + " is not a list of strings")
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		pr.Expiry = exp.Time
	}
	return core.Allowed(pr)
}

// claimHolds reports whether a claim's value, or one of its elements when
// it is a list, is one of accepted.
func claimHolds(v any, accepted []string) bool {
	switch x := v.(type) {
	case []any:
		return slices.ContainsFunc(x, func(e any) bool { return claimHolds(e, accepted) })
	case string:
		return slices.Contains(accepted, x)
	case bool:
		return slices.Contains(accepted, strconv.FormatBool(x))
	case float64:
		return slices.Contains(accepted, strconv.FormatFloat(x, 'f', -1, 64))
	}
	return false
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

var _ plugins.Plugin = (*Plugin)(nil)
