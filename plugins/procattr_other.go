//go:build !linux

package plugins

import "os/exec"

// bindToParent is a no-op off Linux; the plugin side still exits when its
// parent disappears (see exitWithParent).
func bindToParent(*exec.Cmd) {}
