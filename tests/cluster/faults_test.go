package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

// A workload: conversations, sockets on chosen nodes, and writers posting
// through random live nodes with idempotency keys, retrying until each
// post is acknowledged, as clients that must not lose a message do.
type workload struct {
	t       *testing.T
	c       *cluster
	convs   []string
	readers []*reader
	where   map[*reader]*node    // the node each reader's socket is on now
	trail   map[*reader][]string // the nodes each reader's sockets were on, in order
	mu      sync.Mutex
	alive   map[*node]bool
	acked   sync.Map // text -> conversation
	posted  atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newWorkload(t *testing.T, c *cluster, convs, socketsPer int) *workload {
	t.Helper()
	w := &workload{t: t, c: c, where: map[*reader]*node{}, trail: map[*reader][]string{}, alive: map[*node]bool{}, stop: make(chan struct{})}
	for _, n := range c.nodes {
		w.alive[n] = true
	}
	for i := range convs {
		w.convs = append(w.convs, c.nodes[i%len(c.nodes)].createConversation())
	}
	for i, id := range w.convs {
		for j := range socketsPer {
			// Sockets on several nodes, most not the conversation's owner.
			n := c.nodes[(i+j+1)%len(c.nodes)]
			w.attach(&reader{t: t, id: id}, n, "")
		}
	}
	return w
}

// attach opens r's socket on n, asking for replay (a dial query).
func (w *workload) attach(r *reader, n *node, replay string) {
	w.t.Helper()
	conn, err := dial(n, r.id, replay)
	if err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	if _, ok := w.where[r]; !ok {
		w.readers = append(w.readers, r)
	}
	w.where[r] = n
	w.trail[r] = append(w.trail[r], n.name)
	w.mu.Unlock()
	r.follow(conn)
}

// resume reconnects r, whose socket closed, through a live node, for what
// it missed, as a client does.
func (w *workload) resume(r *reader) {
	w.t.Helper()
	w.attach(r, w.live(), r.resumeQuery())
}

// live picks a random live node.
func (w *workload) live() *node {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ns []*node
	for n, ok := range w.alive {
		if ok {
			ns = append(ns, n)
		}
	}
	return ns[rand.IntN(len(ns))]
}

func (w *workload) setAlive(n *node, ok bool) {
	w.mu.Lock()
	w.alive[n] = ok
	w.mu.Unlock()
}

// write starts k writers.
func (w *workload) write(k int) {
	for p := range k {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				id := w.convs[rand.IntN(len(w.convs))]
				text := fmt.Sprintf("w%d-%d", p, i)
				if post(w.live, id, text, "key-"+text, 60*time.Second) {
					w.acked.Store(text, id)
					w.posted.Add(1)
				} else {
					w.t.Errorf("post %s was never acknowledged", text)
					return
				}
				time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond)
			}
		}()
	}
}

// finish stops the writers and waits for them.
func (w *workload) finish() {
	close(w.stop)
	w.wg.Wait()
}

// check compares every reader with its conversation's log once the
// readers have caught up, checks that every acknowledged post is in its
// log exactly once, and that in PostgreSQL each log's row count equals
// its max(seq).
func (w *workload) check(through *node) {
	t := w.t
	t.Helper()
	logs := map[string][]event{}
	for _, id := range w.convs {
		logs[id] = logOf(t, through, id)
	}
	for _, r := range w.readers { // conversations only readers follow, too
		if _, ok := logs[r.id]; !ok {
			logs[r.id] = logOf(t, through, r.id)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, r := range w.readers {
		want := logs[r.id]
		for len(r.events()) < len(want) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		sameAsLog(t, fmt.Sprintf("reader of %s on %s (closes %v)", r.id, strings.Join(w.trail[r], " then "), r.closes), r.events(), want)
	}
	count := map[string]int{}
	for _, log := range logs {
		for _, e := range log {
			count[e.text()]++
		}
	}
	w.acked.Range(func(k, _ any) bool {
		if count[k.(string)] != 1 {
			t.Errorf("acknowledged post %q is in the log %d times", k, count[k.(string)])
		}
		return true
	})
	for text, n := range count {
		if n > 1 {
			t.Errorf("%q is in the log %d times", text, n)
		}
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, w.c.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT conversation_id::text, count(*), max(seq) FROM events GROUP BY conversation_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n, maxSeq int64
		if err := rows.Scan(&id, &n, &maxSeq); err != nil {
			t.Fatal(err)
		}
		if n != maxSeq {
			t.Errorf("conversation %s: %d rows, max(seq) %d: a gap or a doubled seq", id, n, maxSeq)
		}
	}
	t.Logf("%d posts acknowledged over %d conversations, %d readers checked", w.posted.Load(), len(w.convs), len(w.readers))
}

// ownerOf asks each node for its topology and returns how many
// conversations each owns.
func owned(c *cluster) map[*node]int {
	out := map[*node]int{}
	for _, n := range c.nodes {
		code, body := n.request("GET", "/api/cluster", nil)
		var topo struct{ Owned int }
		if code == http.StatusOK && json.Unmarshal(body, &topo) == nil {
			out[n] = topo.Owned
		}
	}
	return out
}

// SIGKILL the node that owns about a third of the conversations and holds
// a third of the sockets: its conversations come back on the survivors
// within 10 s (heartbeat_expiration 3s), its clients reconnect elsewhere
// with after_id (or resend_all, when they had received nothing) and get
// exactly what they missed, and the survivors' sockets stay open and get
// every event in order.
func TestKillOwnerNode(t *testing.T) { killOwner(t, newCluster(t, 3, "")) }

// The same kill with the etcd provider, against a real etcd server: the
// dead node's lease expires and the survivors take its conversations.
func TestEtcdKillOwnerNode(t *testing.T) { killOwner(t, newEtcdCluster(t, 3)) }

func killOwner(t *testing.T, c *cluster) {
	w := newWorkload(t, c, 18, 2)
	victim := c.nodes[1]
	// A conversation nobody posts to before the kill, followed only from
	// the victim: its reader has received nothing when its socket closes,
	// so it resumes asking for the whole log. Its first post is
	// acknowledged before the reader resumes, on a survivor with no relay
	// for it yet, whose new relay starts at the end of the log: a resume
	// that asked for no history would miss that post every time.
	quiet := c.nodes[0].createConversation()
	w.attach(&reader{t: t, id: quiet}, victim, "")
	w.write(4)
	waitFor(t, "posts before the kill", 60*time.Second, func() bool { return w.posted.Load() >= 100 })
	t.Logf("owned before the kill: node0 %d, node1 %d, node2 %d", owned(c)[c.nodes[0]], owned(c)[victim], owned(c)[c.nodes[2]])
	w.setAlive(victim, false)
	victim.Kill()
	killed := time.Now()

	// Every conversation takes a post through a survivor within 10 s.
	var slowest time.Duration
	for _, id := range append([]string{quiet}, w.convs...) {
		if !post(w.live, id, "after-kill-"+id, "after-kill-"+id, 10*time.Second-time.Since(killed)) {
			t.Fatalf("conversation %s did not come back within 10s of the kill", id)
		}
		w.acked.Store("after-kill-"+id, id)
		slowest = max(slowest, time.Since(killed))
	}
	t.Logf("every conversation took a post %s after the kill", slowest.Round(time.Millisecond))

	// The dead node's clients reconnect to a survivor with after_id.
	for _, r := range w.readers {
		if w.where[r] != victim {
			continue
		}
		waitFor(t, "a socket on the killed node to close", 30*time.Second, r.closed)
		w.resume(r)
	}
	if !post(w.live, quiet, "after-resume", "after-resume", 10*time.Second) {
		t.Fatal("post to the quiet conversation after the reconnects was not acknowledged")
	}
	w.acked.Store("after-resume", quiet)
	time.Sleep(time.Second) // more posts after the reconnects
	w.finish()
	for _, r := range w.readers {
		if w.where[r] != victim && r.closed() {
			t.Errorf("a socket on a surviving node closed (codes %v)", r.closes)
		}
	}
	w.check(c.nodes[0])
}

// SIGSTOP a node past heartbeat_expiration, then SIGCONT it: the others
// drop it and take its conversations over with new epochs; its stale
// activations are fenced (nothing they append lands); it finds it was
// dropped and leaves (closing its sockets with 1012, exit status 75) to
// restart as a new member. No conversation ever has two events with one
// Seq, and no acknowledged post is lost.
func TestPausedNodeIsFenced(t *testing.T) {
	c := newCluster(t, 3, "")
	w := newWorkload(t, c, 12, 2)
	w.write(3)
	waitFor(t, "posts before the pause", 60*time.Second, func() bool { return w.posted.Load() >= 60 })
	paused := c.nodes[2]
	w.setAlive(paused, false)
	paused.signal(syscall.SIGSTOP)
	time.Sleep(6 * time.Second) // twice heartbeat_expiration: the others drop it
	for _, id := range w.convs {
		if !post(w.live, id, "during-pause-"+id, "during-pause-"+id, 20*time.Second) {
			t.Fatalf("conversation %s did not take a post while a node was paused", id)
		}
		w.acked.Store("during-pause-"+id, id)
	}
	paused.signal(syscall.SIGCONT)
	select {
	case <-paused.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("the paused node did not leave after it was resumed\n%s", lastLines(paused.Log(), 40))
	}
	if err := paused.Err(); err == nil || !strings.Contains(err.Error(), "exit status 75") {
		t.Errorf("the dropped node exited with %v, want status 75 (restart me)", err)
	}
	for _, r := range w.readers {
		if w.where[r] == paused {
			waitFor(t, "the dropped node's socket to close", 30*time.Second, r.closed)
			if codes := r.closes; len(codes) == 0 || codes[len(codes)-1] != 1012 {
				t.Errorf("a socket on the dropped node closed with %v, want 1012", codes)
			}
			w.resume(r)
		}
	}
	time.Sleep(time.Second)
	w.finish()
	w.check(c.nodes[0])
}

// A rolling restart under load (SIGTERM each node in turn, then start it
// again): nothing acknowledged is lost or doubled, and no client sees a
// close other than 1001 or 1012 before it resumes on another node.
func TestRollingRestart(t *testing.T) {
	c := newCluster(t, 3, "")
	w := newWorkload(t, c, 12, 2)
	w.write(3)
	waitFor(t, "posts before the restarts", 60*time.Second, func() bool { return w.posted.Load() >= 50 })
	for _, n := range c.nodes {
		w.setAlive(n, false)
		// A client's spare keep-alive connection, dialled and never used
		// (Go's transport pools one when another connection took its
		// request): the stop must not wait for it.
		spare, err := net.Dial("tcp", n.Addr)
		if err != nil {
			t.Fatal(err)
		}
		err = n.Stop(30 * time.Second)
		spare.Close()
		if err != nil {
			t.Fatalf("stop %s: %v", n.name, err)
		}
		for _, r := range w.readers {
			if w.where[r] != n {
				continue
			}
			waitFor(t, "a socket on the stopped node to close", 30*time.Second, r.closed)
			if codes := r.closes; codes[len(codes)-1] != 1001 && codes[len(codes)-1] != 1012 {
				t.Errorf("a socket on %s closed with %v, want 1001 or 1012", n.name, codes)
			}
			w.resume(r)
		}
		n.start()
		n.waitReady()
		w.setAlive(n, true)
		start := w.posted.Load()
		waitFor(t, "posts after the restart", 60*time.Second, func() bool { return w.posted.Load() >= start+20 })
	}
	w.finish()
	for _, r := range w.readers {
		for _, code := range r.closes {
			if code != 1001 && code != 1012 {
				t.Errorf("a client saw close %d", code)
			}
		}
	}
	w.check(c.nodes[0])
}

// A node joins a running cluster and starts taking new activations.
func TestNodeJoins(t *testing.T) {
	ports := []int{freePort(t), freePort(t), freePort(t)}
	peers := make([]string, 3)
	for i, p := range ports {
		peers[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	c := &cluster{t: t, dsn: pgtest.DSN(t)}
	for i := range 3 {
		c.nodes = append(c.nodes, c.newNode(fmt.Sprintf("node%d", i), ports[i], peers))
	}
	for _, n := range c.nodes[:2] {
		n.start()
	}
	for _, n := range c.nodes[:2] {
		n.waitReady()
	}
	before := c.nodes[0].createConversation()
	if !post(func() *node { return c.nodes[1] }, before, "before", "before", 10*time.Second) {
		t.Fatal("post before the join")
	}
	joiner := c.nodes[2]
	joiner.start()
	joiner.waitReady()
	waitFor(t, "the others to see the new node", 30*time.Second, func() bool {
		for _, n := range c.nodes[:2] {
			code, body := n.request("GET", "/api/cluster", nil)
			var topo struct{ Members []json.RawMessage }
			if code != http.StatusOK || json.Unmarshal(body, &topo) != nil || len(topo.Members) != 3 {
				return false
			}
		}
		return true
	})
	// New conversations spread over the members: the new one gets some.
	for i := range 30 {
		id := c.nodes[i%2].createConversation()
		if !post(func() *node { return c.nodes[i%3] }, id, "hello", "hello-"+id, 10*time.Second) {
			t.Fatalf("post to new conversation %d", i)
		}
	}
	if n := owned(c)[joiner]; n == 0 {
		t.Errorf("the node that joined owns no conversation of 30 new ones")
	} else {
		t.Logf("the node that joined owns %d of the 30 new conversations", n)
	}
}
