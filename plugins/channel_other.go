//go:build !unix

package plugins

import (
	"errors"
	"net"
	"os"
)

// channelSupported reports whether this platform gives plugin processes a
// channel, and so whether the host offers protocol 4.
const channelSupported = false

// newChannel is never called where channelSupported is false.
func newChannel() (host, plugin *os.File, err error) {
	return nil, nil, errors.New("plugin channels need a unix socketpair")
}

// inheritedChannel is nil: there are no channels here.
func inheritedChannel(func(string) string) net.Conn { return nil }
