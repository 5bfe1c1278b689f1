package plugins

import (
	"os/exec"
	"syscall"
)

// bindToParent asks the kernel to SIGKILL the plugin when the server dies,
// so no plugin outlives it even when the server itself is SIGKILLed.
func bindToParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
