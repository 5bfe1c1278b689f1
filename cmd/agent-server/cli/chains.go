package cli

import (
	"context"

	"github.com/agent-server/agent-server/core"
)

// anonymous allows every request. It backs every route when auth.disabled
// is set, which serve warns about at every start. Anyone may then act as an
// agent runtime too.
type anonymous struct{}

// Name names it in logs.
func (anonymous) Name() string { return "disabled" }

// Authenticate allows the request as "anonymous", with the runtime role.
func (anonymous) Authenticate(context.Context, *core.Request) core.Result {
	return core.Allowed(&core.Principal{Subject: "anonymous", Roles: []string{core.RoleRuntime}})
}

var _ core.Authenticator = anonymous{}

// staticChains serves fixed chains per route.
type staticChains map[core.Route]*core.Chain

// Chain returns the route's chain.
func (s staticChains) Chain(r core.Route) *core.Chain { return s[r] }

func disabledChains() (staticChains, error) {
	out := staticChains{}
	for _, r := range []core.Route{core.RouteEvents, core.RouteREST, core.RouteRuntime} {
		c, err := core.NewChain(r, anonymous{})
		if err != nil {
			return nil, err
		}
		out[r] = c
	}
	return out, nil
}
