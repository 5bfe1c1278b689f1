// Command auth-query is the query authenticator plugin. agent-server starts it;
// it is not meant to be run by hand.
package main

import (
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/query"
)

func main() { plugins.Serve(query.New()) }
