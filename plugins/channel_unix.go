//go:build unix

package plugins

import (
	"fmt"
	"net"
	"os"
	"strconv"
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

// inheritedChannel returns the channel the host handed this plugin
// process (getenv reads channelEnv), or nil when there is none: a host
// older than protocol 4, or the binary run by hand. The descriptor is
// taken only when it is what a host hands over, a unix stream socket at 3
// or above; anything else (a wrapper that closed it, a copied
// environment) is left untouched and said on stderr, and the plugin
// speaks protocol 3. Once taken, the descriptor is closed and the
// connection's own is close-on-exec, so a process the plugin starts does
// not inherit it.
func inheritedChannel(getenv func(string) string) net.Conn {
	v := getenv(channelEnv)
	if v == "" {
		return nil
	}
	fd, err := strconv.Atoi(v)
	if err == nil && fd >= channelFD {
		err = checkChannelFD(fd)
	} else if err == nil {
		err = fmt.Errorf("descriptor %d is below %d", fd, channelFD)
	}
	var conn net.Conn
	if err == nil {
		f := os.NewFile(uintptr(fd), "agent-server channel")
		conn, err = net.FileConn(f) // a close-on-exec copy
		f.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent-server plugin: %s=%q names no channel (%v); serving without one\n", channelEnv, v, err)
		return nil
	}
	return conn
}

// checkChannelFD reports why fd is not a unix stream socket, or nil.
func checkChannelFD(fd int) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fmt.Errorf("descriptor %d: %w", fd, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return fmt.Errorf("descriptor %d is not a socket", fd)
	}
	if typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE); err != nil || typ != syscall.SOCK_STREAM {
		return fmt.Errorf("descriptor %d is not a stream socket", fd)
	}
	if sa, err := syscall.Getsockname(fd); err != nil {
		return fmt.Errorf("descriptor %d: %w", fd, err)
	} else if _, ok := sa.(*syscall.SockaddrUnix); !ok {
		return fmt.Errorf("descriptor %d is not a unix socket", fd)
	}
	return nil
}
