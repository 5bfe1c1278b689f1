package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Three nodes: a conversation created on one, a socket on another, posts
// through the third: the socket gets every event once, in the log's order.
func TestCrossNodeDelivery(t *testing.T) {
	c := newCluster(t, 3, "")
	id := c.nodes[0].createConversation()
	r := &reader{t: t, id: id}
	conn, err := dial(c.nodes[1], id, "")
	if err != nil {
		t.Fatal(err)
	}
	r.follow(conn)
	for i := range 20 {
		if !post(func() *node { return c.nodes[2] }, id, fmt.Sprint("m", i), fmt.Sprint("k", i), 10*time.Second) {
			t.Fatalf("post %d not acknowledged", i)
		}
	}
	waitFor(t, "20 events on the socket", 30*time.Second, func() bool { return len(r.events()) >= 20 })
	sameAsLog(t, "the socket", r.events(), logOf(t, c.nodes[0], id))

	// Each node sees all three; exactly one owns the conversation.
	owned := 0
	for _, n := range c.nodes {
		code, body := n.request("GET", "/api/cluster", nil)
		var topo struct {
			Members []struct{ Address string }
			Owned   int
		}
		if code != http.StatusOK || json.Unmarshal(body, &topo) != nil || len(topo.Members) != 3 {
			t.Fatalf("/api/cluster on %s: %d %s", n.name, code, body)
		}
		owned += topo.Owned
	}
	if owned != 1 {
		t.Errorf("%d activations of the one conversation, want 1", owned)
	}
	checkClusterMetrics(t, c, 3, 1, 20)
	// The topology is not public.
	if code, _ := c.nodes[0].request("GET", "/server_info", nil); code != http.StatusOK {
		t.Fatal("server_info")
	}
	if _, body := c.nodes[0].request("GET", "/server_info", nil); strings.Contains(string(body), "members") {
		t.Errorf("/server_info shows the topology: %s", body)
	}
}

// A socket's messages land in the log in the order it sent them, also
// through a node that does not own the conversation: the relay sends each
// to the owner from its mailbox, in order, and only a retry (after a
// failure) may lose that order.
func TestSocketPostsKeepTheirOrder(t *testing.T) {
	c := newCluster(t, 3, "")
	id := c.nodes[0].createConversation()
	before := owned(c)
	conn, err := dial(c.nodes[0], id, "")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	var via *node
	for _, n := range c.nodes {
		if owned(c)[n] == before[n] { // not the owner
			via = n
		}
	}
	if via == nil {
		t.Fatal("no node that does not own the conversation")
	}
	conn, err = dial(via, id, "")
	if err != nil {
		t.Fatal(err)
	}
	r := &reader{t: t, id: id}
	r.follow(conn)
	const n = 200
	for i := range n {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"role":"user","content":"m%d"}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every message on the socket", 30*time.Second, func() bool { return len(r.events()) >= n })
	log := logOf(t, c.nodes[0], id)
	sameAsLog(t, "the socket", r.events(), log)
	for i, e := range log {
		if want := fmt.Sprint("m", i); e.text() != want {
			t.Fatalf("event %d of the log is %q, want %q: posts from one socket were appended out of order", i, e.text(), want)
		}
	}
}
