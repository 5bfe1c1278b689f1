package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// echoTimeout bounds the wait for a churn connection's own message.
const echoTimeout = 10 * time.Second

// ChurnParams configures the churn scenario.
type ChurnParams struct {
	Credentials
	Rate          float64       // connections started per second
	Duration      time.Duration // how long connections are started
	Concurrency   int           // most connections in flight; the schedule waits beyond it
	Conversations int           // spread over this many conversations (default 8)
	Warmup        time.Duration // churn before the start memory is read, not counted (default 1s)
	Settle        time.Duration // longest wait for the memory to come back after the end (default 30s)
	Tolerance     float64       // memory counts as back within start*(1+Tolerance) (default 0.10)
	Size          int           // text bytes of each connection's message
}

// ChurnResult is what the churn scenario measured.
type ChurnResult struct {
	Attempts    int           `json:"attempts"`
	OK          int           `json:"ok"`
	Errors      int           `json:"errors"`
	FirstErrors []string      `json:"first_errors,omitempty"`
	ErrorRate   float64       `json:"error_rate"`
	Elapsed     time.Duration `json:"elapsed"`
	PerSecond   float64       `json:"per_second"` // attempts per second achieved
	Cycle       Summary       `json:"cycle"`      // dial to own echo received
	Start       Memory        `json:"start"`      // after the warm-up; zeros if unknown
	End         Memory        `json:"end"`        // as the last connection closed
	Settled     Memory        `json:"settled"`
	SettledIn   time.Duration `json:"settled_in"` // how long Settled took; about Settle when it never came back
	CPU         CPUUse        `json:"cpu"`        // during the measured phase
}

// Churn runs the churn scenario: a warm-up, the start memory, then for
// Duration a connection every 1/Rate seconds that connects, sends one
// message, waits for it to come back and closes; then the memory at the
// end and, polled once a second for up to Settle, until both RSS and
// RssAnon are back within Tolerance of the start.
func Churn(ctx context.Context, srv Server, p ChurnParams) (*ChurnResult, error) {
	switch {
	case p.Rate <= 0 || p.Duration <= 0:
		return nil, errors.New("churn: rate and duration must be positive")
	case p.Concurrency < 1:
		p.Concurrency = 1
	}
	if p.Conversations < 1 {
		p.Conversations = 8
	}
	if p.Warmup <= 0 {
		p.Warmup = time.Second
	}
	if p.Settle <= 0 {
		p.Settle = 30 * time.Second
	}
	if p.Tolerance <= 0 {
		p.Tolerance = 0.10
	}
	p.Size = max(p.Size, minText)
	cl, err := newClient(srv.Addr, p.Credentials)
	if err != nil {
		return nil, fmt.Errorf("churn: %w", err)
	}
	convs, err := newConversations(ctx, srv, p.Conversations)
	if err != nil {
		return nil, fmt.Errorf("churn: %w", err)
	}
	ch := &churner{cl: cl, convs: convs, size: p.Size}

	warm := ch.run(ctx, p.Rate, p.Warmup, p.Concurrency)
	if n, first := warm.errs.snapshot(); n > 0 {
		return nil, fmt.Errorf("churn: warm-up: %d failed, first: %s", n, first[0])
	}
	sleep(ctx, time.Second)
	r := &ChurnResult{}
	if r.Start, err = memory(srv); err != nil {
		return nil, fmt.Errorf("churn: %w", err)
	}
	meter := startCPU(srv)
	start := time.Now()
	st := ch.run(ctx, p.Rate, p.Duration, p.Concurrency)
	r.Elapsed = time.Since(start)
	r.CPU = meter.stop()
	r.Attempts = int(st.attempts.Load())
	r.Errors, r.FirstErrors = st.errs.snapshot()
	r.Cycle = st.cycle.summary()
	r.OK = r.Cycle.Count
	if r.Attempts > 0 {
		r.ErrorRate = float64(r.Errors) / float64(r.Attempts)
	}
	r.PerSecond = float64(r.Attempts) / r.Elapsed.Seconds()

	if r.End, err = memory(srv); err != nil {
		return nil, fmt.Errorf("churn: %w", err)
	}
	r.Settled = r.End
	back := func(m Memory) bool {
		return float64(m.RSS) <= float64(r.Start.RSS)*(1+p.Tolerance) && float64(m.Anon) <= float64(r.Start.Anon)*(1+p.Tolerance)
	}
	settleStart := time.Now()
	for r.Start.RSS > 0 && !back(r.Settled) && time.Since(settleStart) < p.Settle && sleep(ctx, time.Second) {
		if r.Settled, err = memory(srv); err != nil {
			return nil, fmt.Errorf("churn: %w", err)
		}
		r.SettledIn = time.Since(settleStart)
	}
	return r, ctx.Err()
}

// churner runs churn connections.
type churner struct {
	cl    *client
	convs []string
	size  int
	seq   atomic.Uint64 // message sequence numbers, unique across the run
	next  atomic.Int64  // connection index, for credentials and conversations
}

// churnStats are one churn phase's counts.
type churnStats struct {
	attempts atomic.Int64
	errs     errorLog
	cycle    samples
}

// run starts connections at rate for d, at most par in flight, and waits
// for all of them.
func (ch *churner) run(ctx context.Context, rate float64, d time.Duration, par int) *churnStats {
	st := &churnStats{}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; ; i++ {
		due := time.Duration(float64(i) * float64(time.Second) / rate)
		if due >= d {
			break
		}
		if wait := due - time.Since(start); wait > 0 && !sleep(ctx, wait) {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		st.attempts.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			if err := ch.once(ctx); err != nil {
				st.errs.add(err)
				return
			}
			st.cycle.add(time.Since(t0))
		}()
	}
	wg.Wait()
	return st
}

// once is one churn connection: connect, send, see the message come back,
// close.
func (ch *churner) once(ctx context.Context) error {
	i := int(ch.next.Add(1) - 1)
	cred, err := ch.cl.credential(i)
	if err != nil {
		return err
	}
	seq := ch.seq.Add(1)
	echoed := make(chan struct{})
	var once sync.Once
	c, err := ch.cl.dial(ctx, ch.convs[i%len(ch.convs)], cred, func(b []byte) {
		if s, _, ok := parseEcho(b); ok && s == seq {
			once.Do(func() { close(echoed) })
		}
	})
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.send(appendMessage(nil, seq, clock(), ch.size)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	t := time.NewTimer(echoTimeout)
	defer t.Stop()
	select {
	case <-echoed:
		return nil
	case <-c.closed:
		return fmt.Errorf("closed before its message came back: %v", c.closeErr)
	case <-t.C:
		return errors.New("its message did not come back within " + echoTimeout.String())
	case <-ctx.Done():
		return ctx.Err()
	}
}
