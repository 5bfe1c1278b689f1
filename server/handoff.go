package server

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// handoffListener is the listener net/http serves when every accepted
// connection needs a step of its own first: a TLS handshake (tls.go), or
// reading the first request head to serve an upgrade directly (direct.go).
// It accepts from the inner listener and runs the step off the accept
// loop, so that a slow client holds up no other; Accept returns the
// connections that steps hand back with pass.
type handoffListener struct {
	net.Listener
	log  *slog.Logger
	run  func(func()) // starts a step
	step func(net.Conn)

	ready     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	failed    chan struct{} // closed on a permanent Accept error, err
	err       error
}

// newHandoffListener returns a listener on ln that runs step for every
// accepted connection, started by run. start begins accepting.
func newHandoffListener(ln net.Listener, log *slog.Logger, run func(func()), step func(net.Conn)) *handoffListener {
	return &handoffListener{Listener: ln, log: log, run: run, step: step,
		ready: make(chan net.Conn), closed: make(chan struct{}), failed: make(chan struct{})}
}

// start begins accepting.
func (l *handoffListener) start() { go l.acceptLoop() }

// goStep starts a step on a new goroutine.
func goStep(f func()) { go f() }

// acceptLoop accepts until the inner listener closes, retrying transient
// errors (too many open files) with net/http's backoff.
func (l *handoffListener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			l.err = err
			close(l.failed)
			return
		}
		backoff = 0
		l.run(func() { l.step(c) })
	}
}

// pass hands c to net/http, or closes it once the listener is closed.
func (l *handoffListener) pass(c net.Conn) {
	select {
	case l.ready <- c:
	case <-l.closed:
		_ = c.Close()
	}
}

// Accept returns the next connection a step passed on.
func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.failed:
		return nil, l.err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; a step that passes a connection afterwards has it
// closed. Only the first call closes the inner listener (and may fail):
// Server.Shutdown and net/http both close it.
func (l *handoffListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		err = l.Listener.Close()
	})
	return err
}
