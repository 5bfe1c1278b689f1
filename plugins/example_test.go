package plugins_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/header"
	"github.com/agent-server/agent-server/plugins/query"
)

// A Plugin runs in-process through NewLocal with the same Info, Configure
// and input skipping as a plugin process: handy in tests.
func ExampleNewLocal() {
	ctx := context.Background()
	keys, _ := plugins.KeyDigests([]string{"k"})
	q, _ := plugins.NewLocal(ctx, "query", query.New(), plugins.ConfigureRequest{KeyDigests: keys})
	h, _ := plugins.NewLocal(ctx, "header", header.New(), plugins.ConfigureRequest{KeyDigests: keys})
	chain, _ := core.NewChain(core.RouteEvents, q, h)

	for _, req := range []*core.Request{
		{Query: core.ParseQuery("session_api_key=k")},
		{Header: http.Header{"X-Session-Api-Key": {"wrong"}}},
		{},
	} {
		res := chain.Authenticate(ctx, req)
		fmt.Printf("%s by %q (%s)\n", res.Decision, res.Authenticator, res.Reason)
	}
	// Output:
	// allow by "query" ()
	// deny by "header" (invalid API key)
	// deny by "" (no credentials)
}
