// Package query is the built-in authenticator that reads the session API key
// from the session_api_key query parameter.
package query

import (
	"context"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/internal/apikey"
)

// Param is the query parameter that carries the key.
const Param = "session_api_key"

// Plugin authenticates by the session_api_key query parameter.
type Plugin struct {
	keys apikey.Checker
}

// New returns an unconfigured query plugin.
func New() *Plugin { return &Plugin{} }

// Info declares the plugin and its one input.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{
		Name:      "query",
		Version:   apikey.Version,
		Inputs:    plugins.Inputs{QueryParams: []string{Param}},
		WantsKeys: true,
	}
}

// Configure loads the session API keys.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	return p.keys.Configure(req)
}

// Authenticate abstains without a key and otherwise matches it.
func (p *Plugin) Authenticate(_ context.Context, req *core.Request) core.Result {
	key := Credential(req)
	if key == "" {
		return core.Abstained()
	}
	return p.keys.Check(key)
}

// Credential returns the key in req's query, or "". The query is decoded
// with core.ParseQuery, so a '+' in a key stays a '+', sent raw or as %2B.
func Credential(req *core.Request) string {
	return req.QueryValue(Param)
}

var _ plugins.Plugin = (*Plugin)(nil)
