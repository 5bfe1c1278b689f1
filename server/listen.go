package server

import (
	"context"
	"fmt"
	"net"
	"time"
)

// TCP keep-alive of the edge's connections: Go's defaults for an accepted
// connection (net.KeepAliveConfig).
const (
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 9
)

// Listen opens the edge's TCP listener on addr. Accepted connections get
// Go's default TCP keep-alive, but set once, on the listening socket, which
// they inherit (Linux), instead of with four setsockopt calls per accepted
// connection; elsewhere Go sets it per connection as usual.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	ln, err := listenConfig.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}
