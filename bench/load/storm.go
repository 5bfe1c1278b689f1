package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// StormParams configures the reconnect-storm scenario.
type StormParams struct {
	// Credentials: Auth and Key are the publishers' and the quiet
	// subscribers' (they never drop); JWTSecret signs a distinct HS256
	// JWT (sub bench-<nonce>-<i>, an hour to live) for each storm client.
	Credentials
	N               int           // storm clients (default 10,000)
	PerConversation int           // storm clients per conversation (default 100)
	Concurrency     int           // first connects in flight at once (default 50)
	Rate            float64       // events per second posted to each storm conversation (default 2)
	Jitter          time.Duration // each client reconnects after a uniform random delay in [0, Jitter] (default 1s)
	// Hold is how long after the last first connect the drop comes: more
	// than auth.cache.allow_ttl (10s by default), so that no storm
	// client's decision is still cached (default 11s).
	Hold        time.Duration
	QuietSubs   int           // subscribers of the paced fan-out that stays up (default 100)
	QuietRate   float64       // its messages per second (default 100)
	QuietWindow time.Duration // the stretch before the drop that gives its quiet latency (default 5s)
	Tail        time.Duration // posting goes on this long after the last client resumed (default 1s)
	Timeout     time.Duration // longest wait for the resumption, and then for the last deliveries (default 60s)
	Size        int           // text bytes per message
	// Observer runs the paced fan-out in a process of its own: the argv
	// of RunObserver's command (agent-bench observe). Empty: in this
	// process, where a saturated generator delays its receipts (see
	// Observe).
	Observer []string
	// CacheSeries names the server's counter of decision-cache hits for
	// the storm clients' plugin, read through Server.Metric before and
	// after the storm (empty: not read).
	CacheSeries string
}

// StormResult is what the reconnect-storm scenario measured.
type StormResult struct {
	Clients       int `json:"clients"`
	Conversations int `json:"conversations"`
	Resumed       int `json:"resumed"` // clients that resumed within Timeout
	// AllResumed is the time from the drop until the last client resumed:
	// its new socket had its full_state and every event posted to its
	// conversation before that socket was ready, replayed or live.
	AllResumed  time.Duration `json:"all_resumed"`
	Resume      Summary       `json:"resume"`      // drop to resumed, per client
	Reconnected Summary       `json:"reconnected"` // drop to the new socket's full_state, per client
	Attempts    int           `json:"attempts"`    // reconnect attempts, the failed ones included
	// Errors counts failed reconnect attempts (each retried after another
	// jittered delay) and anything else amiss, by kind: http (a refused
	// handshake), network (dial, timeout, reset), stream (closed before
	// the first frame), replay (an after_id the server did not know, an
	// unreadable frame, a seq never posted), post (a publisher's send
	// failed), closed (a socket that was not dropped closed: a quiet
	// subscriber, or in the cluster storm a client on a surviving node).
	// Errors is their sum; clients that never resumed show in Resumed.
	Errors       int            `json:"errors"`
	ErrorsByKind map[string]int `json:"errors_by_kind"`
	FirstErrors  []string       `json:"first_errors,omitempty"`
	Posted       int            `json:"posted"`     // events posted to the storm conversations
	Expected     int            `json:"expected"`   // deliveries owed: every posted event to every socket of its conversation
	Delivered    int            `json:"delivered"`  // distinct deliveries
	Lost         int            `json:"lost"`       // Expected - Delivered
	Duplicates   int            `json:"duplicates"` // an event a socket had already received
	Reordered    int            `json:"reordered"`  // an event received after a later one
	// CacheHits is the decision-cache hits for the storm clients' plugin
	// from the drop until every client resumed; -1 when not read.
	CacheHits float64 `json:"cache_hits"`
	// Quiet and StormLatency are the paced fan-out's send-to-receipt
	// latencies for messages sent in the QuietWindow before the drop and
	// between the drop and the last resumption.
	Quiet        Summary       `json:"quiet"`
	StormLatency Summary       `json:"storm_latency"`
	CPU          CPUUse        `json:"cpu"`   // from the drop until every client resumed
	Storm        time.Duration `json:"storm"` // that span, AllResumed or Timeout
	// Background is the CPU over BackgroundSpan, the QuietWindow before
	// the drop: what the posting and the paced fan-out cost by themselves,
	// per second, which CPU also pays for every second of Storm.
	Background     CPUUse        `json:"background"`
	BackgroundSpan time.Duration `json:"background_span"`
}

// ReconnectCPU is the server CPU of the storm with the background's rate
// over Storm taken out: what the reconnects themselves cost, comparable
// between servers whose storms last differently long. Zero when unknown.
func (r *StormResult) ReconnectCPU() time.Duration {
	if r.BackgroundSpan <= 0 {
		return 0
	}
	bg := time.Duration(float64(r.Background.Server) * float64(r.Storm) / float64(r.BackgroundSpan))
	return max(r.CPU.Server-bg, 0)
}

// The kinds of StormResult.ErrorsByKind.
const (
	stormErrHTTP    = "http"
	stormErrNetwork = "network"
	stormErrStream  = "stream"
	stormErrReplay  = "replay"
	stormErrPost    = "post"
	stormErrClosed  = "closed"
)

// StormErrorKinds lists the kinds of StormResult.ErrorsByKind in order.
var StormErrorKinds = []string{stormErrHTTP, stormErrNetwork, stormErrStream, stormErrReplay, stormErrPost, stormErrClosed}

// WithDefaults returns p with its zero fields set to their defaults.
func (p StormParams) WithDefaults() StormParams {
	def := func(v *int, d int) {
		if *v < 1 {
			*v = d
		}
	}
	def(&p.N, 10000)
	def(&p.PerConversation, 100)
	def(&p.Concurrency, 50)
	def(&p.QuietSubs, 100)
	if p.Rate <= 0 {
		p.Rate = 2
	}
	if p.QuietRate <= 0 {
		p.QuietRate = 100
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&p.Jitter, time.Second}, {&p.Hold, 11 * time.Second}, {&p.QuietWindow, 5 * time.Second}, {&p.Tail, time.Second}, {&p.Timeout, 60 * time.Second}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	p.Size = max(p.Size, minText)
	return p
}

// Storm runs the reconnect-storm scenario on one server.
//
// N storm clients, each with a JWT of its own, connect to N/PerConversation
// conversations; a publisher socket per conversation posts Rate events a
// second to it, and a paced fan-out (QuietRate messages a second to
// QuietSubs subscribers of one more conversation) runs beside them. Once
// every storm client has received an event and Hold has passed since the
// last of them connected, every storm client drops its socket at once
// (the TCP connection closed, no close frame), as after a network blip,
// while the posting goes on. Each reconnects with after_id (the last event
// it received) after a uniform random delay in [0, Jitter] from the drop,
// and again after another such delay when an attempt fails. A client has
// resumed once its new socket is ready and it has every event posted to
// its conversation before then. Tail after the last resumption the
// posting stops; once every socket has every posted event (or Timeout
// passes) each socket's events are counted: none lost, none twice.
//
// In cluster mode the same storm kills a node instead: ClusterStorm
// (storm_cluster.go) runs these pieces over the nodes.
func Storm(ctx context.Context, srv Server, p StormParams) (*StormResult, error) {
	p = p.WithDefaults()
	keys := p.Credentials
	if keys.Auth == AuthJWT {
		return nil, errors.New("storm: the publishers and quiet subscribers need a key placement, not jwt")
	}
	keyCl, err := newClient(srv.Addr, keys)
	if err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	jwtCl, err := newClient(srv.Addr, Credentials{Auth: AuthJWT, JWTSecret: p.JWTSecret})
	if err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	nconv := (p.N + p.PerConversation - 1) / p.PerConversation
	convs, err := newConversations(ctx, srv, nconv+1) // the last is the paced fan-out's
	if err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	creds, err := jwtCl.credentials(p.N)
	if err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	st := &storm{p: p, cls: []*client{jwtCl}, convs: convs[:nconv], sent: make([]atomic.Uint64, nconv)}
	defer st.closeAll()
	if err := st.openPublishers(ctx, keyCl); err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	obs, err := startObserver(ctx, ObserveParams{Credentials: keys, Addr: srv.Addr, Conversation: convs[nconv],
		Subs: p.QuietSubs, Rate: p.QuietRate, Size: p.Size, Timeout: p.Timeout}, p.Observer)
	if err != nil {
		return nil, fmt.Errorf("storm: paced fan-out: %w", err)
	}
	defer func() { _, _ = obs.result() }()
	if err := st.openClients(ctx, creds); err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	lastConnect := time.Now()

	stop := make(chan struct{})
	var posters sync.WaitGroup
	posters.Add(1)
	go func() { defer posters.Done(); st.post(ctx, stop) }()
	obs.start()
	stopPosting := sync.OnceFunc(func() { close(stop); obs.stop(); posters.Wait() })
	defer stopPosting()

	if err := st.warm(ctx, lastConnect.Add(p.Hold-p.QuietWindow)); err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	bg, bgStart := startCPU(srv), clock()
	if err := st.warm(ctx, lastConnect.Add(p.Hold)); err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	r := &StormResult{Clients: p.N, Conversations: nconv, CacheHits: -1, ErrorsByKind: map[string]int{}}
	r.Background, r.BackgroundSpan = bg.stop(), time.Duration(clock()-bgStart)
	hits := st.cacheHits(srv)
	meter := startCPU(srv)
	t0 := clock()
	st.drop(ctx, t0, st.clients)
	end := st.waitResumed(ctx, t0, st.clients)
	r.CPU = meter.stop()
	if h := st.cacheHits(srv); h >= 0 && hits >= 0 {
		r.CacheHits = h - hits
	}
	r.Storm = time.Duration(end - t0)
	sleep(ctx, p.Tail)
	stopPosting()
	st.drain(ctx) // while the paced fan-out drains its own
	quiet, err := obs.result()
	if err != nil {
		return nil, fmt.Errorf("storm: paced fan-out: %w", err)
	}
	st.count(r, t0, end)
	r.addQuiet(quiet, t0, end, p.QuietWindow)
	return r, ctx.Err()
}

// storm is one run's shared state.
type storm struct {
	p StormParams
	// cls dial the storm clients' sockets, one per node: storm client i
	// first connects through cls[i%len(cls)] (the same client more than
	// once when the "nodes" are groups of clients on one server).
	cls     []*client
	convs   []string
	pubs    []*conn         // a publisher per conversation (Storm and Observe only)
	sent    []atomic.Uint64 // per conversation: every seq below it is posted (sent by its publisher, or acknowledged over REST)
	clients []*stormClient
	errs    errorLog
	kinds   sync.Map // kind -> *atomic.Int64
	retries sync.WaitGroup
	// next returns the node of a dropped client's next reconnect attempt;
	// nil: the node it was on.
	next func(sc *stormClient) int
}

// stormClient is one socket's accounting across its reconnects. Frames
// count only when they come from its current socket (gen), so that what
// it received and the after_id it resumes from always agree.
type stormClient struct {
	conv int
	cred string

	mu        sync.Mutex
	node      int  // index into storm.cls of its socket's node
	dropped   bool // its socket was dropped, or its node killed, at the storm
	gen       int
	c         *conn
	seen      seqSet
	got, dups int
	late      int
	high      uint64 // highest seq received, plus one
	lastID    string // the id of the last event received
	target    uint64 // once reconnected: resumed when every seq below it is received
	readyAt   int64  // clock() of the new socket's full_state; 0 before
	resumedAt int64  // clock() when resumed; 0 before
	attempts  int
	lat       [][2]int64 // Observe's subscribers: (sent, latency) of each delivery
}

// frame accounts for one frame of socket generation gen.
func (sc *stormClient) frame(gen int, b []byte, keepLatency bool) (bad, unknownID bool) {
	now := clock()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if gen != sc.gen {
		return false, false
	}
	seq, sent, ok := parseEcho(b)
	if !ok {
		if bytes.Contains(b, []byte(`"unknown_event_id"`)) {
			return false, true
		}
		return true, false
	}
	if sc.seen.has(seq) {
		sc.dups++
		return false, false
	}
	sc.seen.add(seq)
	sc.got++
	if seq+1 < sc.high {
		sc.late++
	}
	sc.high = max(sc.high, seq+1)
	if id, ok := eventID(b); ok {
		sc.lastID = id
	}
	if keepLatency {
		sc.lat = append(sc.lat, [2]int64{sent, now - sent})
	}
	if sc.readyAt != 0 && sc.resumedAt == 0 && sc.seen.prefix() >= sc.target {
		sc.resumedAt = now
	}
	return false, false
}

// eventID returns the id an event frame starts with: both servers write
// {"id":"<id>", first.
func eventID(b []byte) (string, bool) {
	const prefix = `{"id":"`
	if !bytes.HasPrefix(b, []byte(prefix)) {
		return "", false
	}
	rest := b[len(prefix):]
	end := bytes.IndexByte(rest, '"')
	if end <= 0 {
		return "", false
	}
	return string(rest[:end]), true
}

// addErr counts one error of kind.
func (st *storm) addErr(kind string, err error) {
	v, _ := st.kinds.LoadOrStore(kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	st.errs.add(fmt.Errorf("%s: %w", kind, err))
}

// dial opens sc's socket through cl with the replay query (nil for none).
func (st *storm) dial(ctx context.Context, cl *client, sc *stormClient, replay url.Values, keepLatency bool) (*conn, int, error) {
	sc.mu.Lock()
	sc.gen++
	gen := sc.gen
	sc.mu.Unlock()
	c, err := cl.dialWith(ctx, st.convs[sc.conv], sc.cred, replay, func(b []byte) {
		bad, unknown := sc.frame(gen, b, keepLatency)
		switch {
		case unknown:
			st.addErr(stormErrReplay, errors.New("the server did not know the after_id; nothing was replayed"))
		case bad:
			st.addErr(stormErrReplay, errors.New("an unreadable frame"))
		}
	})
	return c, gen, err
}

// openPublishers connects a publisher to each conversation.
func (st *storm) openPublishers(ctx context.Context, keyCl *client) error {
	keyCl.readBuf = bulkBufSize
	for k := range st.convs {
		c, err := keyCl.dial(ctx, st.convs[k], st.p.Key, nil)
		if err != nil {
			return fmt.Errorf("publisher %d: %w", k, err)
		}
		st.pubs = append(st.pubs, c)
	}
	return nil
}

// openClients connects the storm clients, Concurrency at a time: client
// i with creds[i] to conversation i/PerConversation through node
// i%len(cls).
func (st *storm) openClients(ctx context.Context, creds []string) error {
	st.clients = make([]*stormClient, st.p.N)
	var errs errorLog
	parallel(ctx, st.p.N, st.p.Concurrency, func(i int) {
		sc := &stormClient{conv: i / st.p.PerConversation, cred: creds[i], node: i % len(st.cls)}
		c, _, err := st.dial(ctx, st.cls[sc.node], sc, nil, false)
		if err != nil {
			errs.add(err)
			return
		}
		sc.c = c
		st.clients[i] = sc
	})
	if n, first := errs.snapshot(); n > 0 {
		return fmt.Errorf("%d of %d storm clients could not connect, first: %s", n, st.p.N, first[0])
	}
	return ctx.Err()
}

// post sends Rate events a second to every storm conversation, the
// conversations in turn, until stop.
func (st *storm) post(ctx context.Context, stop <-chan struct{}) {
	nconv := len(st.convs)
	st.pace(ctx, stop, st.p.Rate*float64(nconv), func(i int) bool {
		k := i % nconv
		return st.send(k)
	})
}

// send posts conversation k's next event; false stops its poster.
func (st *storm) send(k int) bool {
	seq := st.sent[k].Load()
	if err := st.pubs[k].send(appendMessage(nil, seq, clock(), st.p.Size)); err != nil {
		st.addErr(stormErrPost, fmt.Errorf("publisher %d: %w", k, err))
		return false
	}
	st.sent[k].Store(seq + 1)
	return true
}

// pace calls f(0), f(1), ... rate times a second until stop or f fails.
// Missed slots are made up for at once, so the count stays rate*elapsed.
func (st *storm) pace(ctx context.Context, stop <-chan struct{}, rate float64, f func(i int) bool) {
	start := clock()
	for i := 0; ; i++ {
		due := start + int64(float64(i)*float64(time.Second)/rate)
		if wait := time.Duration(due - clock()); wait > 0 && !sleepUnless(ctx, stop, wait) {
			return
		}
		select {
		case <-stop:
			return
		default:
		}
		if !f(i) {
			return
		}
	}
}

// warm waits until every storm client has received an event and until
// dropAt (the cache has forgotten their decisions by then).
func (st *storm) warm(ctx context.Context, dropAt time.Time) error {
	deadline := time.Now().Add(st.p.Timeout)
	for {
		ready := true
		for _, sc := range st.clients {
			sc.mu.Lock()
			ready = ready && sc.lastID != ""
			sc.mu.Unlock()
			if !ready {
				break
			}
		}
		now := time.Now()
		switch {
		case ready && !now.Before(dropAt):
			return nil
		case !ready && now.After(deadline):
			return fmt.Errorf("not every storm client received an event within %s", st.p.Timeout)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// drop closes the sockets of clients at once (no close frame) and
// schedules each one's reconnect at a uniform random delay from t0.
func (st *storm) drop(ctx context.Context, t0 int64, clients []*stormClient) {
	closeNet(st.detach(clients))
	st.resume(ctx, t0, clients)
}

// detach marks clients dropped and takes their sockets from them: frames
// still buffered in an old read loop no longer count. It returns the old
// sockets.
func (st *storm) detach(clients []*stormClient) []*conn {
	old := make([]*conn, 0, len(clients))
	for _, sc := range clients {
		sc.mu.Lock()
		sc.gen++
		sc.dropped = true
		if sc.c != nil {
			old = append(old, sc.c)
		}
		sc.c = nil
		sc.mu.Unlock()
	}
	return old
}

// closeNet closes the TCP connections of conns, no close frame.
func closeNet(conns []*conn) {
	for _, c := range conns {
		_ = c.ws.NetConn().Close()
	}
}

// resume schedules each of clients' reconnects at a uniform random delay
// from t0.
func (st *storm) resume(ctx context.Context, t0 int64, clients []*stormClient) {
	for _, sc := range clients {
		st.retries.Add(1)
		delay := time.Duration(t0 + st.jitter() - clock())
		time.AfterFunc(max(delay, 0), func() {
			defer st.retries.Done()
			st.reconnect(ctx, sc, t0)
		})
	}
}

// jitter is a uniform random delay in [0, Jitter].
func (st *storm) jitter() int64 { return mathrand.Int64N(int64(st.p.Jitter) + 1) }

// reconnect resumes sc with after_id, through the node st.next picks,
// retrying after another jittered delay until Timeout from t0.
func (st *storm) reconnect(ctx context.Context, sc *stormClient, t0 int64) {
	deadline := t0 + int64(st.p.Timeout)
	for ctx.Err() == nil && clock() < deadline {
		sc.mu.Lock()
		sc.attempts++
		after, node := sc.lastID, sc.node
		sc.mu.Unlock()
		if st.next != nil {
			node = st.next(sc)
		}
		c, gen, err := st.dial(ctx, st.cls[node], sc, url.Values{"after_id": {after}}, false)
		if err == nil {
			now := clock()
			target := st.sent[sc.conv].Load()
			sc.mu.Lock()
			current := sc.gen == gen
			if current {
				sc.c, sc.readyAt, sc.target, sc.node = c, now, target, node
				if sc.seen.prefix() >= target {
					sc.resumedAt = now
				}
			}
			sc.mu.Unlock()
			if !current { // the run is over: closeAll passed it by
				c.close()
			}
			return
		}
		st.addErr(dialErrorKind(err), err)
		if !sleep(ctx, time.Duration(st.jitter())) {
			return
		}
	}
}

// dialErrorKind sorts a failed dial.
func dialErrorKind(err error) string {
	var he *HandshakeError
	switch {
	case errors.As(err, &he) && he.Status != 0:
		return stormErrHTTP
	case errors.As(err, &he):
		return stormErrNetwork
	}
	return stormErrStream
}

// waitResumed waits until every one of clients has resumed or Timeout
// from t0 passes, and returns when the last one resumed (the deadline if
// not all did).
func (st *storm) waitResumed(ctx context.Context, t0 int64, clients []*stormClient) int64 {
	deadline := t0 + int64(st.p.Timeout)
	for {
		last, all := t0, true
		for _, sc := range clients {
			sc.mu.Lock()
			at := sc.resumedAt
			sc.mu.Unlock()
			if at == 0 {
				all = false
				break
			}
			last = max(last, at)
		}
		if all {
			return last
		}
		if clock() >= deadline || !sleep(ctx, pollEvery) {
			return clock()
		}
	}
}

// drain waits, once the posting stopped, until every socket has every
// event posted to its conversation, or Timeout passes.
func (st *storm) drain(ctx context.Context) {
	st.retries.Wait()
	deadline := time.Now().Add(st.p.Timeout)
	for _, sc := range st.clients {
		want := st.sent[sc.conv].Load()
		for {
			sc.mu.Lock()
			done := sc.seen.prefix() >= want || sc.c == nil || sc.c.isClosed()
			sc.mu.Unlock()
			if done || time.Now().After(deadline) || !sleep(ctx, 10*time.Millisecond) {
				break
			}
		}
	}
}

// count closes every socket and fills r: r.Conversations must be set,
// the storm conversations being the first of st.convs. Only the clients
// that were dropped count towards Resumed, Resume, Reconnected and
// Attempts.
func (st *storm) count(r *StormResult, t0, end int64) {
	st.closedEarly()
	st.closeAll()
	var resume, ready []int64
	dropped := 0
	for _, sc := range st.clients {
		posted := int(st.sent[sc.conv].Load())
		r.Expected += posted
		r.Delivered += sc.got
		r.Duplicates += sc.dups
		r.Reordered += sc.late
		if sc.high > uint64(posted) {
			st.addErr(stormErrReplay, fmt.Errorf("a socket of conversation %d got seq %d of %d posted", sc.conv, sc.high-1, posted))
		}
		if !sc.dropped {
			continue
		}
		dropped++
		r.Attempts += sc.attempts
		if sc.readyAt != 0 {
			ready = append(ready, sc.readyAt-t0)
		}
		if sc.resumedAt != 0 {
			r.Resumed++
			resume = append(resume, sc.resumedAt-t0)
		}
	}
	for k := range r.Conversations {
		r.Posted += int(st.sent[k].Load())
	}
	r.Lost = r.Expected - r.Delivered
	r.Resume, r.Reconnected = summarize(resume), summarize(ready)
	if r.Resumed == dropped {
		r.AllResumed = r.Resume.Max
	} else {
		st.errs.add(fmt.Errorf("%d of %d clients did not resume within %s", dropped-r.Resumed, dropped, st.p.Timeout))
	}
	for _, k := range StormErrorKinds {
		r.ErrorsByKind[k] = 0
		if v, ok := st.kinds.Load(k); ok {
			r.ErrorsByKind[k] = int(v.(*atomic.Int64).Load())
			r.Errors += r.ErrorsByKind[k]
		}
	}
	_, r.FirstErrors = st.errs.snapshot()
}

// closedEarly counts, as errors of kind closed, the sockets whose read
// loop ended before the count: the scenario takes a socket from its
// client (detach) before it closes it, so this is the server's doing, or
// the death of a node that was not the victim.
func (st *storm) closedEarly() {
	for _, sc := range st.clients {
		if sc == nil {
			continue
		}
		sc.mu.Lock()
		closed := sc.c != nil && sc.c.isClosed()
		node := sc.node
		sc.mu.Unlock()
		if closed {
			st.addErr(stormErrClosed, fmt.Errorf("a socket of conversation %d (node %d) closed though nothing dropped it", sc.conv, node))
		}
	}
}

// closeAll closes every socket still open; safe to call twice.
func (st *storm) closeAll() {
	var conns []*conn
	for _, sc := range st.clients {
		if sc == nil {
			continue
		}
		sc.mu.Lock()
		sc.gen++
		if sc.c != nil {
			conns = append(conns, sc.c)
			sc.c = nil
		}
		sc.mu.Unlock()
	}
	conns = append(conns, st.pubs...)
	st.pubs = nil
	closeAll(conns, 64)
}

// cacheHits reads the decision-cache hits counter, or -1.
func (st *storm) cacheHits(srv Server) float64 {
	if st.p.CacheSeries == "" || srv.Metric == nil {
		return -1
	}
	v, err := srv.Metric(st.p.CacheSeries)
	if err != nil {
		return -1
	}
	return v
}

// seqSet is a growable set of sequence numbers that also tracks its
// prefix: how many of 0, 1, 2, ... it holds without a gap.
type seqSet struct {
	bits []uint64
	low  uint64 // every seq below it is in the set
}

func (s *seqSet) has(seq uint64) bool {
	w := seq / 64
	return w < uint64(len(s.bits)) && s.bits[w]&(1<<(seq%64)) != 0
}

func (s *seqSet) add(seq uint64) {
	w := seq / 64
	for uint64(len(s.bits)) <= w {
		s.bits = append(s.bits, 0)
	}
	s.bits[w] |= 1 << (seq % 64)
	for s.has(s.low) {
		s.low++
	}
}

// prefix is the count of 0, 1, 2, ... in the set before the first gap.
func (s *seqSet) prefix() uint64 { return s.low }

// addQuiet adds the paced fan-out's counts, errors and latencies to r:
// the latencies of the messages sent in the quiet window before the drop
// at t0 go to Quiet, those sent from t0 to end to StormLatency.
func (r *StormResult) addQuiet(q *ObserveResult, t0, end int64, window time.Duration) {
	r.Expected += q.Expected
	r.Delivered += q.Delivered
	r.Duplicates += q.Duplicates
	r.Reordered += q.Reordered
	r.Lost = r.Expected - r.Delivered
	for k, n := range q.ErrorsByKind {
		r.ErrorsByKind[k] += n
		r.Errors += n
	}
	for _, e := range q.FirstErrors {
		if len(r.FirstErrors) < maxErrorTexts {
			r.FirstErrors = append(r.FirstErrors, "paced fan-out: "+e)
		}
	}
	from, until := epoch.UnixNano()+t0, epoch.UnixNano()+end
	var quiet, during []int64
	for _, l := range q.Latencies {
		switch {
		case l[0] >= from-int64(window) && l[0] < from:
			quiet = append(quiet, l[1])
		case l[0] >= from && l[0] <= until:
			during = append(during, l[1])
		}
	}
	r.Quiet, r.StormLatency = summarize(quiet), summarize(during)
}
