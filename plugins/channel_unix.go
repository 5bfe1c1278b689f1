//go:build unix

package plugins

import (
	"fmt"
	"os"
	"syscall"
)

// channelSupported reports whether this platform gives plugin processes a
// channel, and so whether the host offers protocol 4.
const channelSupported = true

// newChannel makes a channel's two ends: the host keeps host, and the
// plugin process inherits plugin. Both are close-on-exec here; exec.Cmd's
// ExtraFiles clears that on the plugin's copy only.
func newChannel() (host, plugin *os.File, err error) {
	syscall.ForkLock.RLock() // no fork between the socketpair and close-on-exec
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, fmt.Errorf("make channel: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "plugin channel (host)"), os.NewFile(uintptr(fds[1]), "plugin channel (plugin)"), nil
}
