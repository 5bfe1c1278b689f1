// Package header is the built-in authenticator that reads the session API
// key from the X-Session-API-Key header.
package header

import (
	"context"
	"strings"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/internal/apikey"
)

// Name is the header that carries the key; it matches in any case.
const Name = "X-Session-API-Key"

// Plugin authenticates by the X-Session-API-Key header.
type Plugin struct {
	keys apikey.Checker
}

// New returns an unconfigured header plugin.
func New() *Plugin { return &Plugin{} }

// Info declares the plugin and its one input.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{
		Name:      "header",
		Version:   apikey.Version,
		Inputs:    plugins.Inputs{Headers: []string{Name}},
		WantsKeys: true,
	}
}

// Configure loads the session API keys.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	return p.keys.Configure(req)
}

// Authenticate abstains without a key and otherwise matches it.
func (p *Plugin) Authenticate(_ context.Context, req *core.Request) core.Result {
	key := Credential(plugins.HeaderValue(req, Name))
	if key == "" {
		return core.Abstained()
	}
	return p.keys.Check(key)
}

// Credential returns the key in a header value: the value with surrounding
// whitespace trimmed.
func Credential(value string) string {
	return strings.TrimSpace(value)
}

var _ plugins.Plugin = (*Plugin)(nil)
