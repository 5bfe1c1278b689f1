// Command auth-webhook is the webhook authenticator plugin: forward
// authentication to an external service (Kubernetes TokenReview or
// auth_request style). agent-server starts it; it is not meant to be run by
// hand.
package main

import (
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/webhook"
)

func main() { plugins.Serve(webhook.New()) }
