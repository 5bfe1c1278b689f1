// Command auth-jwt is the jwt authenticator plugin. agent-server starts it;
// it is not meant to be run by hand.
package main

import (
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/jwt"
)

func main() { plugins.Serve(jwt.New()) }
