// Command auth-first_message is the first_message authenticator plugin.
// agent-server starts it; it is not meant to be run by hand.
package main

import (
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/firstmessage"
)

func main() { plugins.Serve(firstmessage.New()) }
