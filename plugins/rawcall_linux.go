//go:build linux && !race && !msan && !asan

package plugins

import (
	"syscall"
	"unsafe"
)

// checkedCalls reports whether readFD and writeFD are syscall.Read and
// Write, for the race detector or a sanitizer (rawcall_checked_linux.go).
const checkedCalls = false

// readFD reads into p (not empty) with read(2), without entersyscall:
// fd is non-blocking, so the call never blocks (rawSocket).
func readFD(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

// writeFD writes p (not empty) with write(2), without entersyscall.
func writeFD(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}
