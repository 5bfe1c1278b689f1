// Command auth-fault is the fault-injection plugin used by the host tests.
package main

import "github.com/agent-server/agent-server/plugins/internal/faultplugin"

func main() { faultplugin.Main() }
