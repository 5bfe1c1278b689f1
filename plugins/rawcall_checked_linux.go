//go:build linux && (race || msan || asan)

package plugins

import (
	"errors"
	"syscall"
)

// checkedCalls reports whether readFD and writeFD are syscall.Read and
// Write: they are here.
const checkedCalls = true

// readFD is syscall.Read, whose annotations tell the race detector and the
// sanitizers that the kernel wrote p and that this read follows the write
// it returns: they would otherwise miss real races on p, and report false
// ones between goroutines that meet through the socket. The raw call
// (rawcall_linux.go) is for every other build.
func readFD(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), errnoOf(err)
}

// writeFD is syscall.Write, annotated as readFD is.
func writeFD(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), errnoOf(err)
}

// errnoOf is err's Errno, 0 for none.
func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if err != nil && !errors.As(err, &errno) {
		return syscall.EIO
	}
	return errno
}
