package load

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// FanoutParams configures the fan-out scenario.
type FanoutParams struct {
	Credentials
	Subscribers int           // sockets on the conversation, the publisher included
	Messages    int           // messages published
	Size        int           // text bytes per message (at least minText)
	Rate        float64       // messages per second; 0 publishes back to back
	Concurrency int           // subscribers connecting at once
	Timeout     time.Duration // longest wait for every delivery after the last send (default 30s)
	// Addrs spreads the subscribers over several servers (the nodes of a
	// cluster): subscriber i joins through Addrs[i%len(Addrs)], so the
	// publisher, subscriber 0, through Addrs[0]. Empty: srv.Addr alone.
	Addrs []string
}

// FanoutResult is what the fan-out scenario measured.
type FanoutResult struct {
	Subscribers int           `json:"subscribers"`
	Messages    int           `json:"messages"`
	Expected    int           `json:"expected"`   // Subscribers * Messages
	Delivered   int           `json:"delivered"`  // distinct (subscriber, message) pairs received
	Lost        int           `json:"lost"`       // Expected - Delivered
	Duplicates  int           `json:"duplicates"` // a message a subscriber had already received
	Reordered   int           `json:"reordered"`  // deliveries of a message sent before one the subscriber already had
	Errors      int           `json:"errors"`     // subscribers that closed early, unreadable frames
	FirstErrors []string      `json:"first_errors,omitempty"`
	SendTime    time.Duration `json:"send_time"` // first send to last send
	Elapsed     time.Duration `json:"elapsed"`   // first send to last delivery
	PerSecond   float64       `json:"per_second"`
	Latency     Summary       `json:"latency"` // send to receipt, over every delivery
	CPU         CPUUse        `json:"cpu"`     // during the measured phase
}

// subscriber is one fan-out socket's accounting, written only by its read
// loop until its socket is closed.
type subscriber struct {
	c     *conn
	want  int
	seen  []uint64 // bitset of received sequence numbers
	got   int
	dups  int
	late  int    // new messages with a lower sequence number than the highest seen
	high  uint64 // highest sequence number seen, plus one
	bad   int
	lat   []int64
	last  int64         // clock() of the latest new delivery
	done  chan struct{} // closed when all want messages have arrived
	extra int           // messages beyond want, which should not exist
}

func newSubscriber(want int) *subscriber {
	return &subscriber{want: want, seen: make([]uint64, (want+63)/64), lat: make([]int64, 0, want), done: make(chan struct{})}
}

// receive accounts for one frame.
func (s *subscriber) receive(b []byte) {
	now := clock()
	seq, sent, ok := parseEcho(b)
	if !ok {
		s.bad++
		return
	}
	if seq >= uint64(s.want) {
		s.extra++
		return
	}
	w, bit := seq/64, uint64(1)<<(seq%64)
	if s.seen[w]&bit != 0 {
		s.dups++
		return
	}
	s.seen[w] |= bit
	if seq+1 < s.high {
		s.late++
	}
	s.high = max(s.high, seq+1)
	s.got++
	s.last = now
	s.lat = append(s.lat, now-sent)
	if s.got == s.want {
		close(s.done)
	}
}

// Fanout runs the fan-out scenario: Subscribers sockets join one
// conversation, then the first of them publishes Messages messages and
// every socket counts what it receives.
func Fanout(ctx context.Context, srv Server, p FanoutParams) (*FanoutResult, error) {
	switch {
	case p.Subscribers < 1 || p.Messages < 1:
		return nil, errors.New("fanout: subscribers and messages must be at least 1")
	case p.Rate < 0:
		return nil, errors.New("fanout: rate must not be negative")
	}
	p.Size = max(p.Size, minText)
	if p.Concurrency < 1 {
		p.Concurrency = 1
	}
	if p.Timeout <= 0 {
		p.Timeout = 30 * time.Second
	}
	addrs := p.Addrs
	if len(addrs) == 0 {
		addrs = []string{srv.Addr}
	}
	cls := make([]*client, len(addrs))
	for i, addr := range addrs {
		cl, err := newClient(addr, p.Credentials)
		if err != nil {
			return nil, fmt.Errorf("fanout: %w", err)
		}
		cl.readBuf = bulkBufSize
		cls[i] = cl
	}
	convs, err := newConversations(ctx, srv, 1)
	if err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}
	creds, err := cls[0].credentials(p.Subscribers)
	if err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}

	subs := make([]*subscriber, p.Subscribers)
	conns := make([]*conn, p.Subscribers)
	var joinErrs errorLog
	parallel(ctx, p.Subscribers, p.Concurrency, func(i int) {
		s := newSubscriber(p.Messages)
		c, err := cls[i%len(cls)].dial(ctx, convs[0], creds[i], s.receive)
		if err != nil {
			joinErrs.add(err)
			return
		}
		s.c, subs[i], conns[i] = c, s, c
	})
	defer closeAll(conns, p.Concurrency)
	if n, first := joinErrs.snapshot(); n > 0 {
		return nil, fmt.Errorf("fanout: %d of %d subscribers could not join, first: %s", n, p.Subscribers, first[0])
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r := &FanoutResult{Subscribers: p.Subscribers, Messages: p.Messages, Expected: p.Subscribers * p.Messages}
	var errs errorLog
	pub := subs[0].c
	meter := startCPU(srv)
	start := clock()
	buf := make([]byte, 0, p.Size+64)
	for i := range p.Messages {
		if p.Rate > 0 {
			due := start + int64(float64(i)*float64(time.Second)/p.Rate)
			if wait := time.Duration(due - clock()); wait > 0 {
				if !sleep(ctx, wait) {
					break
				}
			}
		}
		buf = appendMessage(buf[:0], uint64(i), clock(), p.Size)
		if err := pub.send(buf); err != nil {
			errs.add(fmt.Errorf("publish message %d: %w", i, err))
			break
		}
	}
	r.SendTime = time.Duration(clock() - start)

	deadline := time.NewTimer(p.Timeout)
	defer deadline.Stop()
wait:
	for _, s := range subs {
		select {
		case <-s.done:
		case <-s.c.closed:
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	r.CPU = meter.stop()
	early := make([]bool, len(subs))
	for i, s := range subs {
		early[i] = s.c.isClosed()
	}
	// Stop every read loop before reading the accounting it writes.
	closeAll(conns, p.Concurrency)

	var all []int64
	last := start
	for i, s := range subs {
		if early[i] && s.got < s.want {
			errs.add(fmt.Errorf("subscriber %d closed after %d of %d messages: %v", i, s.got, s.want, s.c.closeErr))
		}
		if s.bad > 0 || s.extra > 0 {
			errs.add(fmt.Errorf("subscriber %d: %d unreadable frames, %d unexpected sequence numbers", i, s.bad, s.extra))
		}
		r.Delivered += s.got
		r.Duplicates += s.dups
		r.Reordered += s.late
		last = max(last, s.last)
		all = append(all, s.lat...)
	}
	r.Lost = r.Expected - r.Delivered
	r.Errors, r.FirstErrors = errs.snapshot()
	r.Elapsed = time.Duration(last - start)
	if r.Elapsed > 0 {
		r.PerSecond = float64(r.Delivered) / r.Elapsed.Seconds()
	}
	r.Latency = summarize(all)
	return r, ctx.Err()
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	return sleepUnless(ctx, nil, d)
}

// sleepUnless is sleep that stop (nil: never) also cuts short.
func sleepUnless(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}
