package server

import (
	"net"
	"syscall"
)

// listenConfig sets keep-alive on the listening socket, whose options
// Linux copies to the connections it accepts, and has Go leave those
// alone (KeepAlive -1).
var listenConfig = net.ListenConfig{KeepAlive: -1, Control: inheritKeepAlive}

// inheritKeepAlive sets keep-alive on the listening socket.
func inheritKeepAlive(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		for _, o := range []struct{ level, name, value int }{
			{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, int(keepAliveIdle.Seconds())},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, int(keepAliveInterval.Seconds())},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
		} {
			if serr = syscall.SetsockoptInt(int(fd), o.level, o.name, o.value); serr != nil {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}
