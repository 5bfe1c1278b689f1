package load

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ClusterStormParams configures the cluster reconnect storm.
type ClusterStormParams struct {
	// StormParams: Auth and Key are what the REST posts and the owner
	// probes send, JWTSecret signs each storm client's JWT; N,
	// PerConversation, Concurrency, Rate, Jitter, Tail, Timeout, Size and
	// CacheSeries are as in Storm. Hold applies on one server only; the
	// quiet fan-out is not run.
	StormParams
	Victim int // the node killed; on one server, the group whose sockets drop
	Groups int // on one server: how many groups the clients are spread over, as over nodes (default 3)
}

// ClusterStormResult is what one cluster storm measured. In the embedded
// StormResult, Resumed, Resume, Reconnected and Attempts are the dropped
// clients' (those on the killed node); Expected, Delivered, Lost,
// Duplicates and Reordered are every client's, those that stayed up
// included; Quiet and StormLatency are empty.
type ClusterStormResult struct {
	StormResult
	Nodes  int  `json:"nodes"` // 1: one server, on which group Victim dropped its sockets
	Victim int  `json:"victim"`
	Killed bool `json:"killed"` // node Victim was SIGKILLed; false: on one server, a group's sockets dropped
	// Dropped is how many clients were on the killed node (in the
	// dropped group).
	Dropped int `json:"dropped"`
	// VictimOwned is how many storm conversations the killed node owned;
	// -1 when unknown (one server, or Nodes without Owned).
	VictimOwned int   `json:"victim_owned"`
	ResumedOn   []int `json:"resumed_on"` // dropped clients resumed through each node (group)
	// ReconnectsPerSecond is the dropped clients that reconnected over
	// the time from the drop until the last of them had its new socket's
	// full_state.
	ReconnectsPerSecond float64       `json:"reconnects_per_second"`
	PostsRetried        int           `json:"posts_retried"` // posts acknowledged only after another attempt
	SlowestPost         time.Duration `json:"slowest_post"`  // the longest a post took, first attempt to acknowledgement
}

// ClusterStorm runs the reconnect storm on a cluster: the drop is the death
// of one node.
//
// It makes N/PerConversation conversations, owned by the nodes in turn
// (found as Recovery does, when n.Owned is set), and connects N storm
// clients, each with an HS256 JWT of its own, client i to conversation
// i/PerConversation through node i%nodes. A poster per conversation posts
// Rate events a second to it over REST, each post with an idempotency key
// and retried through the next live node until acknowledged (a socket's
// post to a conversation whose owner has just died is not acknowledged, so
// it could not be counted as posted), the next post only after it. Once
// every client has received an event, node Victim is SIGKILLed (n.Kill)
// and the clock starts. Each of its clients reconnects with after_id (the
// last event it received) after a uniform random delay in [0, Jitter] from
// the kill, through the surviving nodes in turn, and again after another
// such delay, through the next survivor, when an attempt fails. Nothing is
// cached for them there: their JWTs are distinct and were only ever
// presented to the killed node, and each node's decision cache is its
// own; CacheSeries, summed over the survivors, shows it. The clients on
// the survivors must keep receiving: a socket of theirs that closes is an
// error of kind closed, and their events are counted as the others'.
// Resumption, the tail, the drain and the count are Storm's: every client
// must have every posted event once.
//
// On one server (n.Servers has one entry, and Kill is not used) the same
// run is the comparison: the clients are spread over Groups groups as over
// nodes, and when Hold has passed since the last first connect (so that
// the decision cache has forgotten them), group Victim's sockets drop at
// once, as in Storm, and reconnect to the same server.
func ClusterStorm(ctx context.Context, n Nodes, p ClusterStormParams) (*ClusterStormResult, error) {
	nodes := len(n.Servers)
	p.StormParams = p.StormParams.WithDefaults()
	if p.Groups < 1 {
		p.Groups = 3
	}
	groups := nodes
	if nodes == 1 {
		groups = p.Groups
	}
	switch {
	case nodes == 0:
		return nil, errors.New("cluster storm: no node")
	case groups < 2:
		return nil, errors.New("cluster storm: at least two nodes, or two groups on one server")
	case nodes > 1 && n.Kill == nil:
		return nil, errors.New("cluster storm: a cluster needs Nodes.Kill")
	case p.Victim < 0 || p.Victim >= groups:
		return nil, fmt.Errorf("cluster storm: victim %d of %d", p.Victim, groups)
	case p.Auth == AuthJWT:
		return nil, errors.New("cluster storm: the REST posts need a key placement, not jwt")
	}
	keys := Credentials{Auth: p.Auth, Key: p.Key}
	if err := keys.check(); err != nil {
		return nil, fmt.Errorf("cluster storm: %w", err)
	}
	cls := make([]*client, groups)
	for i := range cls {
		if i >= nodes {
			cls[i] = cls[0] // a group of the one server
			continue
		}
		cl, err := newClient(n.Servers[i].Addr, Credentials{Auth: AuthJWT, JWTSecret: p.JWTSecret})
		if err != nil {
			return nil, fmt.Errorf("cluster storm: %w", err)
		}
		cls[i] = cl
	}
	nconv := (p.N + p.PerConversation - 1) / p.PerConversation
	r := &ClusterStormResult{
		StormResult: StormResult{Clients: p.N, Conversations: nconv, CacheHits: -1, ErrorsByKind: map[string]int{}},
		Nodes:       nodes, Victim: p.Victim, Killed: nodes > 1, VictimOwned: -1,
	}
	convs, owners, err := placeConversations(ctx, n, keys, nconv)
	if err != nil {
		return nil, fmt.Errorf("cluster storm: %w", err)
	}
	if owners != nil {
		r.VictimOwned = 0
		for _, o := range owners {
			if o == p.Victim {
				r.VictimOwned++
			}
		}
	}
	creds, err := cls[0].credentials(p.N)
	if err != nil {
		return nil, fmt.Errorf("cluster storm: %w", err)
	}
	st := &storm{p: p.StormParams, cls: cls, convs: convs, sent: make([]atomic.Uint64, nconv)}
	defer st.closeAll()
	cs := &clusterStorm{p: p, st: st, rest: newRESTNodes(n, p.Key, nconv)}
	defer cs.rest.http.CloseIdleConnections()
	var b [6]byte
	_, _ = rand.Read(b[:])
	cs.nonce = hex.EncodeToString(b[:])
	if err := st.openClients(ctx, creds); err != nil {
		return nil, fmt.Errorf("cluster storm: %w", err)
	}
	lastConnect := time.Now()

	stop := make(chan struct{})
	var posters sync.WaitGroup
	for k := range nconv {
		posters.Add(1)
		go func() { defer posters.Done(); cs.post(ctx, k, stop) }()
	}
	stopPosting := sync.OnceFunc(func() { close(stop); posters.Wait() })
	defer stopPosting()

	dropAt := time.Now() // a killed node's clients meet survivors that never saw them
	if nodes == 1 {
		dropAt = lastConnect.Add(p.Hold)
	}
	if err := st.warm(ctx, dropAt); err != nil {
		return nil, fmt.Errorf("cluster storm: %w", err)
	}
	var victims []*stormClient
	for _, sc := range st.clients {
		if sc.node == p.Victim {
			victims = append(victims, sc)
		}
	}
	// The servers that take the reconnects, whose cache hits count.
	var survivors []int
	for i := range nodes {
		if nodes == 1 || i != p.Victim {
			survivors = append(survivors, i)
		}
	}
	hits := cs.cacheHits(n, survivors)

	t0 := clock()
	old := st.detach(victims)
	if r.Killed {
		cs.rest.setLive(p.Victim, false)
		if err := n.Kill(p.Victim); err != nil {
			return nil, fmt.Errorf("cluster storm: kill node %d: %w", p.Victim, err)
		}
		var turn atomic.Uint64
		st.next = func(*stormClient) int { return survivors[(turn.Add(1)-1)%uint64(len(survivors))] }
	}
	closeNet(old)
	// After the kill: a node's CPU reads every live node's
	// (target.Cluster.Load), which no longer has the victim's.
	meter := startCPU(n.Servers[survivors[0]])
	st.resume(ctx, t0, victims)
	end := st.waitResumed(ctx, t0, victims)
	r.CPU = meter.stop()
	if h := cs.cacheHits(n, survivors); h >= 0 && hits >= 0 {
		r.CacheHits = h - hits
	}
	r.Storm = time.Duration(end - t0)
	sleep(ctx, p.Tail)
	stopPosting()
	st.drain(ctx)
	st.count(&r.StormResult, t0, end)

	r.Dropped = len(victims)
	r.ResumedOn = make([]int, groups)
	for _, sc := range victims {
		sc.mu.Lock()
		if sc.resumedAt != 0 {
			r.ResumedOn[sc.node]++
		}
		sc.mu.Unlock()
	}
	if r.Reconnected.Max > 0 {
		r.ReconnectsPerSecond = float64(r.Reconnected.Count) / r.Reconnected.Max.Seconds()
	}
	cs.mu.Lock()
	r.PostsRetried, r.SlowestPost = cs.retried, cs.slowest
	cs.mu.Unlock()
	return r, ctx.Err()
}

// placeConversations makes nconv conversations: on a cluster with Owned,
// conversation k owned by node k%nodes (created through the next node,
// as Recovery does), and its owners; else created through the nodes in
// turn, owners unknown (nil).
func placeConversations(ctx context.Context, n Nodes, keys Credentials, nconv int) ([]string, []int, error) {
	nodes := len(n.Servers)
	convs := make([]string, nconv)
	if nodes == 1 || n.Owned == nil {
		for k := range convs {
			id, err := n.Servers[k%nodes].NewConversation(ctx)
			if err != nil {
				return nil, nil, fmt.Errorf("create conversation: %w", err)
			}
			convs[k] = id
		}
		return convs, nil, nil
	}
	owners := make([]int, nconv)
	for k := range convs {
		owner := k % nodes
		id, _, err := OwnedConversation(ctx, n, keys, (k+1)%nodes, func(o int) bool { return o == owner })
		if err != nil {
			return nil, nil, fmt.Errorf("conversation %d: %w", k, err)
		}
		convs[k], owners[k] = id, owner
	}
	return convs, owners, nil
}

// clusterStorm is the cluster storm's posting, beside the storm's shared
// state.
type clusterStorm struct {
	p     ClusterStormParams
	st    *storm
	rest  *restNodes
	nonce string // makes the run's idempotency keys unique

	mu      sync.Mutex
	retried int
	slowest time.Duration
}

// post posts Rate events a second to conversation k until stop, each once
// the one before it is acknowledged, so that the log holds them in seq
// order. The posters of the conversations start spread over one period.
func (cs *clusterStorm) post(ctx context.Context, k int, stop <-chan struct{}) {
	period := float64(time.Second) / cs.p.Rate
	if !sleepUnless(ctx, stop, time.Duration(period*float64(k)/float64(len(cs.st.convs)))) {
		return
	}
	cs.st.pace(ctx, stop, cs.p.Rate, func(int) bool { return cs.postNext(ctx, k) })
}

// postNext posts conversation k's next event and counts it as posted once
// acknowledged; false stops its poster.
func (cs *clusterStorm) postNext(ctx context.Context, k int) bool {
	seq := cs.st.sent[k].Load()
	body := appendMessage(nil, seq, clock(), cs.p.Size)
	start := time.Now()
	at, failed, err := cs.rest.post(ctx, cs.st.convs[k], body, fmt.Sprintf("storm-%s-%d-%d", cs.nonce, k, seq), cs.p.Timeout)
	if err != nil {
		if ctx.Err() == nil {
			cs.st.addErr(stormErrPost, fmt.Errorf("conversation %d: %w", k, err))
		}
		return false
	}
	cs.st.sent[k].Store(seq + 1)
	cs.mu.Lock()
	cs.slowest = max(cs.slowest, at.Sub(start))
	if failed > 0 {
		cs.retried++
	}
	cs.mu.Unlock()
	return true
}

// cacheHits sums the decision-cache hits counter over the nodes in
// which, or returns -1.
func (cs *clusterStorm) cacheHits(n Nodes, which []int) float64 {
	total := 0.0
	for _, i := range which {
		h := cs.st.cacheHits(n.Servers[i])
		if h < 0 {
			return -1
		}
		total += h
	}
	return total
}
