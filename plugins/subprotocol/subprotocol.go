// Package subprotocol is the built-in authenticator that reads the session
// API key from the offered WebSocket subprotocols, in the style of
// Kubernetes, so that a browser can authenticate without putting the key in
// a URL:
//
//	Sec-WebSocket-Protocol: agent-server.v1, base64url.bearer.agent-server.<base64url(key)>
//
// The token entry counts only next to the real protocol, Protocol, which is
// the only one the server ever echoes. An entry whose token is a
// well-formed JWT is abstained on: the oidc plugin reads IdP tokens from the
// same entry, after this plugin in the default events chain.
package subprotocol

import (
	"context"
	"encoding/base64"
	"strings"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/internal/apikey"
	"github.com/agent-server/agent-server/plugins/internal/jwttoken"
)

// Protocol is the real subprotocol a client must also offer; the server
// echoes it and nothing else.
const Protocol = core.Subprotocol

// TokenPrefix starts the entry that carries the key, base64url-encoded
// without padding.
const TokenPrefix = "base64url.bearer.agent-server."

// tokenFamily is the start of every bearer entry in the Kubernetes style.
// An entry of that family that is not a well-formed TokenPrefix entry is
// malformed and denied rather than ignored.
const tokenFamily = "base64url.bearer."

// Plugin authenticates by a key carried in a subprotocol entry.
type Plugin struct {
	keys apikey.Checker
}

// New returns an unconfigured subprotocol plugin.
func New() *Plugin { return &Plugin{} }

// Info declares the plugin and its one input.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{
		Name:      "subprotocol",
		Version:   apikey.Version,
		Inputs:    plugins.Inputs{Subprotocol: true},
		WantsKeys: true,
	}
}

// Configure loads the session API keys.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	return p.keys.Configure(req)
}

// Authenticate abstains when no token entry is offered or its token is a
// JWT. It denies two token entries, a malformed one, and a token offered
// without Protocol; otherwise it matches the key.
func (p *Plugin) Authenticate(_ context.Context, req *core.Request) core.Result {
	key, found, reason := Token(req.Subprotocols)
	switch {
	case !found:
		return core.Abstained()
	case reason != "":
		return core.Denied(reason)
	case jwttoken.IsJWT(key):
		return core.Abstained()
	}
	return p.keys.Check(key)
}

// Token finds the key in the offered subprotocols. found is false when no
// entry of the bearer family is offered. Otherwise reason, when not empty,
// says why the offer is refused: a duplicate or malformed entry, or no
// Protocol next to it. The reason never contains the key.
func Token(offered []string) (key string, found bool, reason string) {
	var entries []string
	hasProtocol := false
	for _, p := range offered {
		switch {
		case p == Protocol:
			hasProtocol = true
		case strings.HasPrefix(strings.ToLower(p), tokenFamily):
			entries = append(entries, p)
		}
	}
	switch {
	case len(entries) == 0:
		return "", false, ""
	case len(entries) > 1:
		return "", true, "more than one token subprotocol"
	}
	enc, ok := strings.CutPrefix(entries[0], TokenPrefix)
	if !ok || enc == "" {
		return "", true, "malformed token subprotocol"
	}
	// Go's decoder skips \r and \n wherever they are, so only an encoding
	// that comes back unchanged is the one canonical spelling of its key.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(enc)
	if err != nil || len(raw) == 0 || strings.ContainsAny(string(raw), "\x00\r\n") || base64.RawURLEncoding.EncodeToString(raw) != enc {
		return "", true, "malformed token subprotocol"
	}
	if !hasProtocol {
		return "", true, "token subprotocol offered without " + Protocol
	}
	return string(raw), true, ""
}

// Entry returns the subprotocol entry that carries key, for clients.
func Entry(key string) string {
	return TokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(key))
}

var _ plugins.Plugin = (*Plugin)(nil)
