// Command agent-echo is agent-server's reference agent runtime: it attaches
// to conversations on /sockets/runtime and, on run, answers each user
// message with an agent message that echoes it. See package echo and
// docs/runtime.md.
package main

import (
	"os"

	"github.com/agent-server/agent-server/cmd/agent-echo/echo"
)

func main() { os.Exit(echo.Main(os.Args[1:], os.Getenv, os.Stderr)) }
