package load

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// ConnectParams configures the connect scenario.
type ConnectParams struct {
	Credentials
	N             int  // connections measured
	Concurrency   int  // connections in flight at once
	Conversations int  // spread over this many conversations (default 8)
	WrongKey      bool // present a wrong key: every handshake must be refused with 401
}

// ConnectResult is what the connect scenario measured.
type ConnectResult struct {
	Attempts    int           `json:"attempts"`
	OK          int           `json:"ok"`     // ready, or refused with 401 under WrongKey
	Errors      int           `json:"errors"` // anything else
	FirstErrors []string      `json:"first_errors,omitempty"`
	Elapsed     time.Duration `json:"elapsed"`
	PerSecond   float64       `json:"per_second"`    // OK / Elapsed
	TimeToReady Summary       `json:"time_to_ready"` // dial to first frame (or to the 401)
	CPU         CPUUse        `json:"cpu"`           // during the measured phase
}

// Connect runs the connect scenario: a warm-up of Concurrency connections,
// then N more, each dialled, authenticated and closed as soon as its
// full_state frame arrives.
func Connect(ctx context.Context, srv Server, p ConnectParams) (*ConnectResult, error) {
	if p.N < 1 || p.Concurrency < 1 {
		return nil, errors.New("connect: n and concurrency must be at least 1")
	}
	creds := p.Credentials
	if p.WrongKey {
		creds.Auth, creds.Key = wrongKeyAuth(creds.Auth), "wrong-"+creds.Key
	}
	cl, err := newClient(srv.Addr, creds)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	nconv := p.Conversations
	if nconv < 1 {
		nconv = 8
	}
	convs, err := newConversations(ctx, srv, nconv)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	warm := p.Concurrency
	credList, err := cl.credentials(warm + p.N)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}

	one := func(i int) (time.Duration, error) {
		t0 := time.Now()
		c, err := cl.dial(ctx, convs[i%len(convs)], credList[i], nil)
		d := time.Since(t0)
		if p.WrongKey {
			var he *HandshakeError
			switch {
			case err == nil:
				c.close()
				return 0, errors.New("a wrong key was accepted")
			case errors.As(err, &he) && he.Status == http.StatusUnauthorized:
				return d, nil
			default:
				return 0, err
			}
		}
		if err != nil {
			return 0, err
		}
		c.close()
		return d, nil
	}

	var warmErrs errorLog
	parallel(ctx, warm, p.Concurrency, func(i int) {
		if _, err := one(i); err != nil {
			warmErrs.add(err)
		}
	})
	if n, first := warmErrs.snapshot(); n > 0 {
		return nil, fmt.Errorf("connect: warm-up: %d of %d failed, first: %s", n, warm, first[0])
	}

	var lat samples
	var errs errorLog
	meter := startCPU(srv)
	start := time.Now()
	attempts := parallel(ctx, p.N, p.Concurrency, func(i int) {
		d, err := one(warm + i)
		if err != nil {
			errs.add(err)
			return
		}
		lat.add(d)
	})
	elapsed := time.Since(start)
	r := &ConnectResult{Attempts: attempts, Elapsed: elapsed, TimeToReady: lat.summary()}
	r.CPU = meter.stop()
	r.Errors, r.FirstErrors = errs.snapshot()
	r.OK = r.TimeToReady.Count
	r.PerSecond = float64(r.OK) / elapsed.Seconds()
	return r, ctx.Err()
}

// wrongKeyAuth keeps the credential's placement but never a JWT: a wrong
// key is a plain key.
func wrongKeyAuth(a Auth) Auth {
	if a == AuthJWT {
		return AuthBearer
	}
	return a
}

// newConversations creates n conversations.
func newConversations(ctx context.Context, srv Server, n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		id, err := srv.NewConversation(ctx)
		if err != nil {
			return nil, fmt.Errorf("create conversation: %w", err)
		}
		out[i] = id
	}
	return out, nil
}
