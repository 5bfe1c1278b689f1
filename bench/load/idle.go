package load

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// IdleParams configures the idle scenario.
type IdleParams struct {
	Credentials
	N               int           // connections held
	Concurrency     int           // connections opening at once
	PerConversation int           // connections per conversation (default 100)
	Hold            time.Duration // how long they are held after the last one is ready (default 5s)
	Settle          time.Duration // quiet time before the first RSS reading (default 1s)
}

// IdleResult is what the idle scenario measured.
type IdleResult struct {
	N             int      `json:"n"`
	Ready         int      `json:"ready"`  // connections that got their full_state frame
	Held          int      `json:"held"`   // of those, still open at the end of the hold
	Errors        int      `json:"errors"` // failed to connect, or dropped during the hold
	FirstErrors   []string `json:"first_errors,omitempty"`
	Before        Memory   `json:"before"` // zeros if unknown
	After         Memory   `json:"after"`
	BytesPerConn  float64  `json:"bytes_per_conn"` // (After.RSS - Before.RSS) / Ready
	AnonPerConn   float64  `json:"anon_per_conn"`  // the same for RssAnon
	Conversations int      `json:"conversations"`
}

// Idle runs the idle scenario: it reads the server's RSS, opens N
// connections spread over conversations, holds them, reads the RSS again
// and closes them.
func Idle(ctx context.Context, srv Server, p IdleParams) (*IdleResult, error) {
	if p.N < 1 {
		return nil, errors.New("idle: n must be at least 1")
	}
	if p.Concurrency < 1 {
		p.Concurrency = 1
	}
	if p.PerConversation < 1 {
		p.PerConversation = 100
	}
	if p.Hold <= 0 {
		p.Hold = 5 * time.Second
	}
	if p.Settle <= 0 {
		p.Settle = time.Second
	}
	cl, err := newClient(srv.Addr, p.Credentials)
	if err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	r := &IdleResult{N: p.N, Conversations: (p.N + p.PerConversation - 1) / p.PerConversation}
	convs, err := newConversations(ctx, srv, r.Conversations)
	if err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	creds, err := cl.credentials(p.N)
	if err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	if !sleep(ctx, p.Settle) {
		return nil, ctx.Err()
	}
	if r.Before, err = memory(srv); err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}

	var errs errorLog
	conns := make([]*conn, p.N)
	defer closeAll(conns, p.Concurrency)
	parallel(ctx, p.N, p.Concurrency, func(i int) {
		c, err := cl.dial(ctx, convs[i/p.PerConversation], creds[i], nil)
		if err != nil {
			errs.add(fmt.Errorf("connection %d: %w", i, err))
			return
		}
		conns[i] = c
	})
	for _, c := range conns {
		if c != nil {
			r.Ready++
		}
	}
	sleep(ctx, p.Hold)
	if r.After, err = memory(srv); err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	for i, c := range conns {
		switch {
		case c == nil:
		case c.isClosed():
			errs.add(fmt.Errorf("connection %d dropped while idle: %v", i, c.closeErr))
		default:
			r.Held++
		}
	}
	r.Errors, r.FirstErrors = errs.snapshot()
	if r.Ready > 0 && r.Before.RSS > 0 {
		r.BytesPerConn = float64(r.After.RSS-r.Before.RSS) / float64(r.Ready)
		r.AnonPerConn = float64(r.After.Anon-r.Before.Anon) / float64(r.Ready)
	}
	return r, ctx.Err()
}
