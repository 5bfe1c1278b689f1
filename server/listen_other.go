//go:build !linux

package server

import "net"

// listenConfig has Go set keep-alive on each accepted connection.
var listenConfig = net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount}}
