// Command auth-rogue is the protocol-breaking plugin used by the host tests.
package main

import "github.com/agent-server/agent-server/plugins/internal/rogueplugin"

func main() { rogueplugin.Main() }
