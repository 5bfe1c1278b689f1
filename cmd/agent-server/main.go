// Command agent-server serves agent conversations over WebSocket and REST,
// authenticating every request through a chain of plugin processes.
package main

import (
	"os"

	"github.com/agent-server/agent-server/cmd/agent-server/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
