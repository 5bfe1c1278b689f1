// Command auth-bearer is the bearer authenticator plugin. agent-server starts it;
// it is not meant to be run by hand.
package main

import (
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/bearer"
)

func main() { plugins.Serve(bearer.New()) }
