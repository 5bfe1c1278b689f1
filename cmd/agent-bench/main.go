// Command agent-bench is agent-server's load generator: it measures
// agent-server and a minimal gws reference server side by side. See
// docs/benchmarks.md and `agent-bench -h`.
package main

import (
	"os"

	"github.com/agent-server/agent-server/cmd/agent-bench/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
