package load

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// RecoveryParams configures the recovery scenario.
type RecoveryParams struct {
	// Credentials are the sockets'; REST posts and reads send Key in
	// X-Session-API-Key, so the auth must be a key, not a JWT.
	Credentials
	Conversations  int           // conversation k is owned by node k%nodes (default 6)
	ReadersPerNode int           // sockets on each conversation through each node (default 5)
	Writers        int           // REST writers (default 4)
	Rate           float64       // posts per second, all writers together (default 200)
	Victim         int           // the node killed
	Warmup         time.Duration // load before the kill (default 2s)
	After          time.Duration // load after the recovery, before the check (default 1s)
	Timeout        time.Duration // longest wait for the recovery, and for one post's acknowledgement (default 60s)
}

// RecoveryResult is what one recovery trial measured.
type RecoveryResult struct {
	Nodes         int `json:"nodes"`
	Victim        int `json:"victim"`
	VictimOwned   int `json:"victim_owned"` // conversations the killed node owned
	Conversations int `json:"conversations"`
	Readers       int `json:"readers"` // sockets, on every node
	Resumed       int `json:"resumed"` // sockets that were on the killed node and resumed on a survivor with after_id
	// Recovery is, over the conversations the killed node owned, the
	// longest time from the kill until a post sent through a survivor
	// after the kill was acknowledged AND every socket of the
	// conversation had received it: those resumed from the killed node
	// and those that stayed on the survivors.
	Recovery        time.Duration   `json:"recovery"`
	PerConversation []time.Duration `json:"per_conversation"` // each of those conversations' recovery
	Acknowledged    time.Duration   `json:"acknowledged"`     // kill to the last of those posts acknowledged
	Reattached      time.Duration   `json:"reattached"`       // kill to the last resumed socket's full_state
	// SlowestPost is the longest any acknowledged post took, from its
	// first attempt to its acknowledgement, retries included: a post in
	// flight to the killed node when it died.
	SlowestPost time.Duration `json:"slowest_post"`
	Posts       int           `json:"posts"`      // posts acknowledged, over every conversation
	Retried     int           `json:"retried"`    // of which acknowledged only after another attempt
	Lost        int           `json:"lost"`       // acknowledged posts missing from the log
	Duplicated  int           `json:"duplicated"` // posts in the log more than once
	Mismatched  int           `json:"mismatched"` // sockets whose events are not exactly the log: a gap, a duplicate, another order
	Errors      int           `json:"errors"`
	FirstErrors []string      `json:"first_errors,omitempty"`
}

// Bounds of the recovery scenario's clients.
const (
	postAttempt = 30 * time.Second      // one REST call
	retryWait   = 50 * time.Millisecond // between attempts of a post or a dial
	catchUp     = 30 * time.Second      // sockets reaching the end of the log, at the check
	pollEvery   = 5 * time.Millisecond  // polling for the recovery; timestamps are taken where things happen
	logPage     = 100                   // events per events/search page
)

// Recovery runs one trial of the recovery scenario on a running cluster.
// It makes Conversations conversations, owned round-robin by the nodes,
// opens ReadersPerNode sockets on each through every node, and starts
// Writers REST writers posting at Rate through the live nodes in turn, each
// post with an idempotency key and retried (same key, another node) until
// it is acknowledged. After Warmup it SIGKILLs node Victim. Right after
// the kill, a probe post to each conversation the victim owned goes
// through the survivors, and the victim's sockets reconnect to the
// survivors with after_id (the last event each received). The trial
// measures when every probe is acknowledged and in every socket of its
// conversation, then goes on for After, stops the writers and checks
// every conversation's log: each acknowledged post in it exactly once,
// and each socket's events exactly the log, in order.
func Recovery(ctx context.Context, n Nodes, p RecoveryParams) (*RecoveryResult, error) {
	nodes := len(n.Servers)
	switch {
	case nodes < 2:
		return nil, errors.New("recovery: at least two nodes")
	case p.Victim < 0 || p.Victim >= nodes:
		return nil, fmt.Errorf("recovery: victim %d of %d nodes", p.Victim, nodes)
	case p.Auth == AuthJWT:
		return nil, errors.New("recovery: REST posts need a key, not a JWT")
	}
	p = p.WithDefaults()
	if err := p.Credentials.check(); err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	rt := &trial{n: n, p: p, rest: newRESTNodes(n, p.Key, p.Writers+p.Conversations)}
	defer rt.rest.http.CloseIdleConnections()
	var b [6]byte
	_, _ = rand.Read(b[:])
	rt.nonce = hex.EncodeToString(b[:])
	r := &RecoveryResult{Nodes: nodes, Victim: p.Victim, Conversations: p.Conversations}

	if err := rt.setUp(ctx, r); err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	defer rt.stopFollowers()

	stop := make(chan struct{})
	var writers sync.WaitGroup
	for w := range p.Writers {
		writers.Add(1)
		go func() { defer writers.Done(); rt.write(ctx, w, stop) }()
	}
	stopWriters := sync.OnceFunc(func() { close(stop); writers.Wait() })
	defer stopWriters()
	if !sleep(ctx, p.Warmup) {
		return nil, ctx.Err()
	}
	if rt.acked.Load() == 0 {
		n, first := rt.errs.snapshot()
		return nil, fmt.Errorf("recovery: no post acknowledged in the warm-up (%d errors, first: %v)", n, first)
	}
	if err := rt.kill(ctx, r); err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	sleep(ctx, p.After)
	stopWriters()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rt.check(ctx, r)
	r.Posts = int(rt.acked.Load())
	rt.mu.Lock()
	r.SlowestPost, r.Retried = rt.slowest, rt.retried
	rt.mu.Unlock()
	r.Errors, r.FirstErrors = rt.errs.snapshot()
	return r, ctx.Err()
}

// setUp makes the conversations, owned round-robin by the nodes so that
// the victim owns its share, and opens the sockets, which start following.
func (rt *trial) setUp(ctx context.Context, r *RecoveryResult) error {
	nodes := len(rt.n.Servers)
	for k := range rt.p.Conversations {
		owner := k % nodes
		id, _, err := OwnedConversation(ctx, rt.n, rt.p.Credentials, (k+1)%nodes, func(o int) bool { return o == owner })
		if err != nil {
			return fmt.Errorf("conversation %d: %w", k, err)
		}
		rt.convs = append(rt.convs, id)
		rt.owner = append(rt.owner, owner)
		if owner == rt.p.Victim {
			r.VictimOwned++
		}
	}
	for k := range rt.convs {
		for node := range nodes {
			for range rt.p.ReadersPerNode {
				f := &follower{trial: rt, conv: k, node: node}
				if err := f.open(ctx, nil); err != nil {
					rt.stopFollowers()
					return fmt.Errorf("open a socket on node %d: %w", node, err)
				}
				rt.followers = append(rt.followers, f)
			}
		}
	}
	r.Readers = len(rt.followers)
	for _, f := range rt.followers {
		rt.wg.Add(1)
		go f.follow(ctx)
	}
	return nil
}

// kill SIGKILLs the victim, posts a probe through the survivors to each
// conversation it owned, and waits until every probe is acknowledged and
// in every socket of its conversation (the victim's sockets resume on
// their own, in follow); it records the recovery in r.
func (rt *trial) kill(ctx context.Context, r *RecoveryResult) error {
	var owned []int
	probeText := make([]string, len(rt.convs))
	for k, o := range rt.owner {
		if o == rt.p.Victim {
			owned = append(owned, k)
			probeText[k] = fmt.Sprintf("rec-%s-probe-%d", rt.nonce, k)
		}
	}
	for _, f := range rt.followers {
		f.setProbe(probeText[f.conv])
	}
	rt.rest.setLive(rt.p.Victim, false)
	killed := time.Now()
	rt.killedAt.Store(&killed)
	if err := rt.n.Kill(rt.p.Victim); err != nil {
		return fmt.Errorf("kill node %d: %w", rt.p.Victim, err)
	}
	probeAck := make([]time.Time, len(rt.convs))
	var probes sync.WaitGroup
	for _, k := range owned {
		probes.Add(1)
		go func() {
			defer probes.Done()
			at, err := rt.post(ctx, k, probeText[k])
			if err != nil {
				rt.errs.add(fmt.Errorf("probe of conversation %d: %w", k, err))
				return
			}
			probeAck[k] = at
		}()
	}
	probes.Wait()

	recovered := func() bool {
		for _, f := range rt.followers {
			if probeText[f.conv] != "" && f.probeTime().IsZero() {
				return false
			}
		}
		return true
	}
	deadline := killed.Add(rt.p.Timeout)
	for !recovered() && time.Now().Before(deadline) && sleep(ctx, pollEvery) {
	}
	if !recovered() {
		rt.errs.add(fmt.Errorf("not recovered within %s of the kill", rt.p.Timeout))
	}
	for _, k := range owned {
		if probeAck[k].IsZero() {
			continue
		}
		at := probeAck[k]
		r.Acknowledged = max(r.Acknowledged, at.Sub(killed))
		for _, f := range rt.followers {
			if f.conv == k {
				at = latest(at, f.probeTime())
			}
		}
		d := at.Sub(killed)
		r.PerConversation = append(r.PerConversation, d)
		r.Recovery = max(r.Recovery, d)
	}
	for _, f := range rt.followers {
		if t := f.reattachedAt(); !t.IsZero() {
			r.Resumed++
			r.Reattached = max(r.Reattached, t.Sub(killed))
		}
	}
	return nil
}

// WithDefaults returns p with its zero fields set to their defaults.
func (p RecoveryParams) WithDefaults() RecoveryParams {
	if p.Conversations < 1 {
		p.Conversations = 6
	}
	if p.ReadersPerNode < 1 {
		p.ReadersPerNode = 5
	}
	if p.Writers < 1 {
		p.Writers = 4
	}
	if p.Rate <= 0 {
		p.Rate = 200
	}
	if p.Warmup <= 0 {
		p.Warmup = 2 * time.Second
	}
	if p.After <= 0 {
		p.After = time.Second
	}
	if p.Timeout <= 0 {
		p.Timeout = 60 * time.Second
	}
	return p
}

// latest is the later of a and b.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// trial is one recovery trial's shared state.
type trial struct {
	n         Nodes
	p         RecoveryParams
	nonce     string // makes the trial's post texts and keys unique
	rest      *restNodes
	convs     []string
	owner     []int
	followers []*follower
	wg        sync.WaitGroup // the followers' goroutines
	killedAt  atomic.Pointer[time.Time]
	errs      errorLog

	mu    sync.Mutex
	texts map[string]int // acknowledged post text -> conversation index
	acked atomic.Int64   // len(texts)
	// slowest and retried are SlowestPost and Retried.
	slowest time.Duration
	retried int
}

// check reads every conversation's log and counts what is lost,
// duplicated, or seen otherwise by a socket.
func (rt *trial) check(ctx context.Context, r *RecoveryResult) {
	rt.mu.Lock()
	texts := make(map[string]int, len(rt.texts))
	for t, k := range rt.texts {
		texts[t] = k
	}
	rt.mu.Unlock()
	for k := range rt.convs {
		log, err := rt.logOf(ctx, k)
		if err != nil {
			rt.errs.add(fmt.Errorf("read the log of conversation %d: %w", k, err))
			continue
		}
		count := map[string]int{}
		ids := make([]string, len(log))
		for i, e := range log {
			ids[i] = e.ID
			if t := e.text(); t != "" {
				count[t]++
			}
		}
		for t, n := range count {
			if n > 1 {
				r.Duplicated++
				rt.errs.add(fmt.Errorf("conversation %d: %q is in the log %d times", k, t, n))
			}
		}
		for t, tk := range texts {
			if tk == k && count[t] == 0 {
				r.Lost++
				rt.errs.add(fmt.Errorf("conversation %d: acknowledged post %q is not in the log", k, t))
			}
		}
		until := time.Now().Add(catchUp)
		for _, f := range rt.followers {
			if f.conv != k {
				continue
			}
			for len(f.received()) < len(ids) && time.Now().Before(until) && sleep(ctx, 10*time.Millisecond) {
			}
			if bad := f.unreadable(); bad > 0 {
				rt.errs.add(fmt.Errorf("conversation %d: a socket got %d unreadable frames", k, bad))
			}
			if got := f.received(); !slices.Equal(got, ids) {
				r.Mismatched++
				rt.errs.add(fmt.Errorf("conversation %d: a socket (node %d, resumed %v) has %d events, the log %d; first difference at %d",
					k, f.node, !f.reattachedAt().IsZero(), len(got), len(ids), firstDiff(got, ids)))
			}
		}
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
