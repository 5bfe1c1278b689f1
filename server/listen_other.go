//go:build !linux

package server

import "syscall"

// keepAliveInherited: not relied on outside Linux.
const keepAliveInherited = false

// inheritKeepAlive is unused outside Linux.
func inheritKeepAlive(_, _ string, _ syscall.RawConn) error { return nil }
