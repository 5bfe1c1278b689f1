//go:build !linux

package plugins

import "os/exec"

// bindToParent is a no-op off Linux; the plugin side still exits when its
// parent disappears (see exitWithParent).
func bindToParent(*exec.Cmd) {}

// startBatch runs start: the scheduling class is Linux's.
func startBatch(start func() error) error { return start() }
