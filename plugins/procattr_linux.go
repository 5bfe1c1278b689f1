package plugins

import (
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindToParent asks the kernel to SIGKILL the plugin when the server dies,
// so no plugin outlives it even when the server itself is SIGKILLed. The
// plugin also gets its own process group, so a Ctrl-C or a group-wide
// SIGTERM reaches only the server, which then shuts its plugins down in
// order instead of losing them mid-request.
func bindToParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// startBatch runs start, which starts a plugin process, from a thread in
// the SCHED_BATCH scheduling class, which the process and every thread it
// makes inherit. A batch thread that wakes does not preempt the one
// running: the host, which sent it a call, goes on until it waits or its
// time slice ends, sending the calls of the handshakes it runs meanwhile,
// and the plugin then answers them in one batch, instead of taking the
// core back after every call (two context switches each). Its share of
// the CPU is unchanged, so it is never starved. If the class cannot be
// set, start runs as it is.
func startBatch(start func() error) error {
	runtime.LockOSThread() // the thread that forks; Go makes no other thread from it while locked
	old, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return start()
	}
	batch := *old
	batch.Policy = unix.SCHED_BATCH
	if err := unix.SchedSetAttr(0, &batch, 0); err != nil {
		runtime.UnlockOSThread()
		return start()
	}
	defer func() {
		// A thread whose class could not be restored stays locked, and
		// ends with this goroutine, so that no other goroutine runs on it.
		if unix.SchedSetAttr(0, old, 0) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return start()
}
