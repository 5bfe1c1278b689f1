// Command auth-mtls is the mtls authenticator plugin: verified client
// certificates. agent-server starts it; it is not meant to be run by hand.
package main

import (
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/mtls"
)

func main() { plugins.Serve(mtls.New()) }
