// Command auth-subprotocol is the subprotocol authenticator plugin. agent-server
// starts it; it is not meant to be run by hand.
package main

import (
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/subprotocol"
)

func main() { plugins.Serve(subprotocol.New()) }
