package plugins

import (
	"os/exec"
	"syscall"
)

// bindToParent asks the kernel to SIGKILL the plugin when the server dies,
// so no plugin outlives it even when the server itself is SIGKILLed. The
// plugin also gets its own process group, so a Ctrl-C or a group-wide
// SIGTERM reaches only the server, which then shuts its plugins down in
// order instead of losing them mid-request.
func bindToParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
