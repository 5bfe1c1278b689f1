// Command auth-oidc is the oidc authenticator plugin: tokens from an OpenID
// Connect identity provider. agent-server starts it; it is not meant to be
// run by hand.
package main

import (
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/oidc"
)

func main() { plugins.Serve(oidc.New()) }
