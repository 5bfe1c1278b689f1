package cluster

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

// cutter is a TCP proxy whose connections the test can cut while it keeps
// accepting new ones: a dropped connection between two live nodes.
type cutter struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return c
}

// cut closes every connection through the proxy.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// Protoactor reports a relay's node terminated to the owner when the
// owner's connection to that node drops, though the relay lives on, and
// the owner forgets the relay; the relay, whose own connection to the
// owner is intact, is not told. Its lease renewal registers it again: its
// socket misses nothing. Here node2 is reached through a proxy whose
// connections the test cuts.
func TestRelayLeaseSurvivesADroppedConnection(t *testing.T) {
	remote := freePort(t)
	proxy := newCutter(t, fmt.Sprintf("127.0.0.1:%d", remote))
	c := startCluster(t, &cluster{t: t, dsn: pgtest.DSN(t), nodeEnv: map[string][]string{"node2": {
		fmt.Sprintf("AGENT_SERVER_CLUSTER__BIND=127.0.0.1:%d", remote),
		"AGENT_SERVER_CLUSTER__ADVERTISE=" + proxy.ln.Addr().String(),
	}}}, 3)
	relayNode := c.nodes[2]

	// A conversation owned elsewhere, with a socket on node2.
	var id string
	for i := 0; id == "" && i < 20; i++ {
		cand := c.nodes[0].createConversation()
		before := owned(c)[relayNode]
		if !post(func() *node { return c.nodes[0] }, cand, "first", "first-"+cand, 10*time.Second) {
			t.Fatal("first post not acknowledged")
		}
		if owned(c)[relayNode] == before {
			id = cand
		}
	}
	if id == "" {
		t.Fatal("node2 owned each of 20 conversations")
	}
	r := &reader{t: t, id: id}
	conn, err := dial(relayNode, id, "")
	if err != nil {
		t.Fatal(err)
	}
	r.follow(conn)
	if !post(func() *node { return c.nodes[1] }, id, "before", "before", 10*time.Second) {
		t.Fatal("post before the cut not acknowledged")
	}
	waitFor(t, "the event before the cut", 10*time.Second, func() bool { return len(r.events()) == 1 })

	proxy.cut()
	for i := range 20 {
		if !post(func() *node { return c.nodes[1] }, id, fmt.Sprint("after-", i), fmt.Sprint("after-", i), 20*time.Second) {
			t.Fatalf("post %d after the cut not acknowledged", i)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, "every event after the cut on node2's socket", 20*time.Second, func() bool { return len(r.events()) >= 21 })
	sameAsLog(t, "node2's socket", r.events(), logOf(t, c.nodes[0], id)[1:])
	if r.closed() {
		t.Errorf("node2's socket closed (%v)", r.closes)
	}
}
