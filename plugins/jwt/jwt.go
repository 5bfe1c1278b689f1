// Package jwt is an example custom authenticator, built exactly as a
// third-party plugin would be: it verifies HS256 JSON Web Tokens sent as
// "Authorization: Bearer <jwt>" with a secret from its plugin config.
//
// The token must carry exp and sub; nbf is checked when present. sub becomes
// the principal's subject, exp its expiry, and an optional "conversations"
// claim (a list of conversation IDs) its scopes. An optional "roles" claim
// becomes the principal's roles: a token with "roles": ["runtime"] may act
// as an agent runtime.
//
// It abstains on what is not its own, so that bearer, oidc and jwt share
// the Authorization header in one chain, in any order: a token that is not
// a JWT (an API key), one signed with a public-key algorithm (an identity
// provider's, for oidc), and, when issuer is set, one from another issuer.
//
// Config (plugins.instances.jwt.config):
//
//	secret:   "<at least 32 bytes>"  # required; HS256 key
//	issuer:   "https://issuer"       # optional; iss must match
//	audience: "agent-server"         # optional; aud must contain it
//	leeway:   "30s"                  # optional clock skew allowance
package jwt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/bearer"
	"github.com/agent-server/agent-server/plugins/internal/jwttoken"
)

// Version is this plugin's version.
const Version = "1.0.0"

// minSecret is the shortest HS256 secret accepted: the hash size.
const minSecret = 32

// Config is the plugin's config.
type Config struct {
	Secret   string `json:"secret"`
	Issuer   string `json:"issuer"`
	Audience string `json:"audience"`
	Leeway   string `json:"leeway"`
}

// Claims are the token claims the plugin reads.
type Claims struct {
	jwtlib.RegisteredClaims
	Conversations []string `json:"conversations,omitempty"`
	Roles         []string `json:"roles,omitempty"`
}

// Plugin verifies HS256 JWTs.
type Plugin struct {
	now    func() time.Time
	parser atomic.Pointer[configured]
}

type configured struct {
	key      jwtlib.Keyfunc // returns the secret, made once: not an allocation per token
	issuer   string
	audience string
	leeway   time.Duration
	parser   *jwtlib.Parser
	fast     *jwttoken.HS256 // nil only in tests, for golang-jwt alone
}

// New returns an unconfigured jwt plugin.
func New() *Plugin { return &Plugin{now: time.Now} }

// Info declares the plugin; it reads the Authorization header and needs no
// session API keys.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{
		Name:    "jwt",
		Version: Version,
		Inputs:  plugins.Inputs{Headers: []string{bearer.Header}},
	}
}

// Configure reads and checks the secret and the optional claims checks.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	var cfg Config
	if err := req.DecodeConfig(&cfg); err != nil {
		return err
	}
	if len(cfg.Secret) < minSecret {
		return fmt.Errorf("secret must be at least %d bytes, got %d", minSecret, len(cfg.Secret))
	}
	opts := []jwtlib.ParserOption{
		jwtlib.WithValidMethods([]string{jwtlib.SigningMethodHS256.Alg()}),
		jwtlib.WithExpirationRequired(),
		jwtlib.WithTimeFunc(p.now),
	}
	var leeway time.Duration
	if cfg.Leeway != "" {
		d, err := time.ParseDuration(cfg.Leeway)
		if err != nil || d < 0 {
			return fmt.Errorf("leeway %q: want a non-negative duration like 30s", cfg.Leeway)
		}
		leeway = d
		opts = append(opts, jwtlib.WithLeeway(d))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwtlib.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwtlib.WithAudience(cfg.Audience))
	}
	var key any = []byte(cfg.Secret)
	p.parser.Store(&configured{
		key:      func(*jwtlib.Token) (any, error) { return key, nil },
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		leeway:   leeway,
		parser:   jwtlib.NewParser(opts...),
		fast:     jwttoken.NewHS256([]byte(cfg.Secret)),
	})
	return nil
}

// Authenticate abstains on a token that is not its own (see the package
// doc), denies one that fails any check, and allows a valid one. A valid
// token of the common shape is verified without golang-jwt
// (jwttoken.HS256), which decides every other token and every denial.
func (p *Plugin) Authenticate(_ context.Context, req *core.Request) core.Result {
	tok := bearer.Token(plugins.HeaderValue(req, bearer.Header))
	c := p.parser.Load()
	if c != nil && c.fast != nil {
		var fc jwttoken.Claims
		if c.fast.Verify(tok, &fc) {
			// Inspect reads a token Verify accepts as an HS256 JWT with
			// this issuer: what it would decide is decided here.
			if c.issuer != "" && fc.Issuer != c.issuer {
				return core.Abstained()
			}
			if c.valid(&fc, p.now()) {
				return allowed(fc.Subject, time.Unix(fc.Expiry, 0), fc.Issuer, fc.Conversations, fc.Roles)
			}
		}
	}
	shape, ok := jwttoken.Inspect(tok)
	if !ok || shape.Asymmetric() {
		return core.Abstained()
	}
	if c == nil {
		return core.Failed(errors.New("plugin is not configured"))
	}
	if c.issuer != "" && shape.Issuer != c.issuer {
		return core.Abstained()
	}
	var claims Claims
	_, err := c.parser.ParseWithClaims(tok, &claims, c.key)
	if err != nil {
		return core.Denied(jwttoken.DenyReason(err))
	}
	if claims.Subject == "" {
		return core.Denied("token has no sub")
	}
	var exp time.Time
	if claims.ExpiresAt != nil {
		exp = claims.ExpiresAt.Time
	}
	return allowed(claims.Subject, exp, claims.Issuer, claims.Conversations, claims.Roles)
}

// valid reports whether claims that jwttoken.HS256 read pass every check
// golang-jwt's validator makes as Configure set it up, and carry a sub.
// Claims that fail go to golang-jwt, which names the failure.
func (c *configured) valid(fc *jwttoken.Claims, now time.Time) bool {
	switch {
	case fc.Subject == "":
		return false
	case !now.Before(time.Unix(fc.Expiry, 0).Add(c.leeway)):
		return false // expired
	case fc.HasNotBefore && now.Before(time.Unix(fc.NotBefore, 0).Add(-c.leeway)):
		return false // not valid yet
	case c.issuer != "" && fc.Issuer != c.issuer:
		return false
	case c.audience != "" && !slices.Contains(fc.Audience, c.audience):
		return false
	}
	return true
}

// allowed is the verdict on a valid token.
func allowed(sub string, exp time.Time, iss string, conversations, roles []string) core.Result {
	pr := &core.Principal{Subject: sub, Expiry: exp, Scopes: conversations, Roles: roles}
	if iss != "" {
		pr.Claims = map[string]string{"iss": iss}
	}
	return core.Allowed(pr)
}

var _ plugins.Plugin = (*Plugin)(nil)
