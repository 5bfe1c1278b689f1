package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A workload: conversations, sockets on chosen nodes, and writers posting
// through random live nodes with idempotency keys, retrying until each
// post is acknowledged, as clients that must not lose a message do.
type workload struct {
	t       *testing.T
	c       *cluster
	convs   []string
	readers []*reader
	where   map[*reader]*node // the node each reader's socket is on now
	mu      sync.Mutex
	alive   map[*node]bool
	acked   sync.Map // text -> conversation
	posted  atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newWorkload(t *testing.T, c *cluster, convs, socketsPer int) *workload {
	t.Helper()
	w := &workload{t: t, c: c, where: map[*reader]*node{}, alive: map[*node]bool{}, stop: make(chan struct{})}
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

// attach opens r's socket on n (resuming after afterID).
func (w *workload) attach(r *reader, n *node, afterID string) {
	w.t.Helper()
	conn, err := dial(n, r.id, afterID)
	if err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	if _, ok := w.where[r]; !ok {
		w.readers = append(w.readers, r)
	}
	w.where[r] = n
	w.mu.Unlock()
	r.follow(conn)
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
	for _, r := range w.readers {
		want := logs[r.id]
		waitFor(t, "a reader to catch up with its log", 60*time.Second, func() bool { return len(r.events()) >= len(want) })
		sameAsLog(t, fmt.Sprintf("reader of %s on %s", r.id, w.where[r].name), r.events(), want)
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
// with after_id and get exactly what they missed, and the survivors'
// sockets stay open and get every event in order.
func TestKillOwnerNode(t *testing.T) {
	c := newCluster(t, 3, "")
	w := newWorkload(t, c, 18, 2)
	w.write(4)
	waitFor(t, "posts before the kill", 60*time.Second, func() bool { return w.posted.Load() >= 100 })
	victim := c.nodes[1]
	t.Logf("owned before the kill: node0 %d, node1 %d, node2 %d", owned(c)[c.nodes[0]], owned(c)[victim], owned(c)[c.nodes[2]])
	w.setAlive(victim, false)
	victim.Kill()
	killed := time.Now()

	// Every conversation takes a post through a survivor within 10 s.
	var slowest time.Duration
	for _, id := range w.convs {
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
		w.attach(r, w.live(), r.lastID())
	}
	time.Sleep(time.Second) // more posts after the reconnects
	w.finish()
	for _, r := range w.readers {
		if w.where[r] != victim && r.closed() {
			t.Errorf("a socket on a surviving node closed (codes %v)", r.closes)
		}
	}
	w.check(c.nodes[0])
}
