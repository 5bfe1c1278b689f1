// Command auth-header is the header authenticator plugin. agent-server starts it;
// it is not meant to be run by hand.
package main

import (
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/header"
)

func main() { plugins.Serve(header.New()) }
