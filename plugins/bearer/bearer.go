// Package bearer is the built-in authenticator that reads the session API
// key from an "Authorization: Bearer <key>" header.
//
// It abstains on a bearer token that is a well-formed JWT: such a token is
// for the jwt or oidc plugin, which may share the header in one chain, in
// any order.
package bearer

import (
	"context"
	"strings"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/internal/apikey"
	"github.com/agent-server/agent-server/plugins/internal/jwttoken"
)

// Header is the header the plugin reads.
const Header = "Authorization"

// Plugin authenticates by a bearer token that is a session API key.
type Plugin struct {
	keys apikey.Checker
}

// New returns an unconfigured bearer plugin.
func New() *Plugin { return &Plugin{} }

// Info declares the plugin and its one input.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{
		Name:      "bearer",
		Version:   apikey.Version,
		Inputs:    plugins.Inputs{Headers: []string{Header}},
		WantsKeys: true,
	}
}

// Configure loads the session API keys.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	return p.keys.Configure(req)
}

// Authenticate abstains without a bearer token or with a JWT, and
// otherwise matches the token as a session API key.
func (p *Plugin) Authenticate(_ context.Context, req *core.Request) core.Result {
	tok := Token(plugins.HeaderValue(req, Header))
	if tok == "" || jwttoken.IsJWT(tok) {
		return core.Abstained()
	}
	return p.keys.Check(tok)
}

// Token returns the token of an Authorization value "Bearer <token>", the
// scheme in any case, or "" for any other scheme, a bare "Bearer" or an
// empty token.
func Token(value string) string {
	value = strings.TrimSpace(value)
	scheme, tok, ok := strings.Cut(value, " ")
	if !ok {
		if scheme, tok, ok = strings.Cut(value, "\t"); !ok {
			return ""
		}
	}
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

var _ plugins.Plugin = (*Plugin)(nil)
