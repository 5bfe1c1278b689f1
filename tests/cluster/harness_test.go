// Package cluster runs agent-server in cluster mode as it is deployed:
// several real server processes on loopback, with the static provider (or
// etcd), sharing a throwaway PostgreSQL, driven by real WebSocket and REST
// clients. It kills, stops and restarts nodes and checks that no
// acknowledged event is lost, none is duplicated, and every reader sees the
// log in order.
package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
	"github.com/agent-server/agent-server/tests/testbin"
)

// key is the session API key every node accepts.
const key = "cluster-test-key"

// binDir holds the binaries built once for the package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-server-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	if err := testbin.Build(dir, "header", "bearer"); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is one cluster member process.
type node struct {
	t      *testing.T
	name   string
	dir    string   // its config and log live here
	env    []string // its environment
	config string
	*testbin.Process
}

// cluster is a set of nodes sharing one database.
type cluster struct {
	t     *testing.T
	dsn   string
	extra string   // YAML added to every node's config
	etcd  string   // the etcd endpoint, for the etcd provider; else static
	env   []string // environment added to every node's
	// nodeEnv adds environment to one node's, by name.
	nodeEnv map[string][]string
	nodes   []*node
}

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// newCluster writes n nodes' configs for the static provider (every node
// lists every membership port) and starts them; it waits until each is
// ready (joined).
func newCluster(t *testing.T, n int, extra string) *cluster {
	t.Helper()
	return startCluster(t, &cluster{t: t, dsn: pgtest.DSN(t), extra: extra}, n)
}

// newEtcdCluster starts n nodes with the etcd provider against a real etcd
// server of its own.
func newEtcdCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return startCluster(t, &cluster{t: t, dsn: pgtest.DSN(t), etcd: startEtcd(t)}, n)
}

func startCluster(t *testing.T, c *cluster, n int) *cluster {
	t.Helper()
	ports := make([]int, n)
	peers := make([]string, n)
	for i := range ports {
		ports[i] = freePort(t)
		peers[i] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	for i := range n {
		c.nodes = append(c.nodes, c.newNode(fmt.Sprintf("node%d", i), ports[i], peers))
	}
	for _, nd := range c.nodes {
		nd.start()
	}
	for _, nd := range c.nodes {
		nd.waitReady()
	}
	return c
}

// newNode writes a node's config; start runs it.
func (c *cluster) newNode(name string, membershipPort int, peers []string) *node {
	c.t.Helper()
	dir := c.t.TempDir()
	membership := fmt.Sprintf("provider: static\n  static:\n    port: %d\n    peers: [%s]", membershipPort, strings.Join(peers, ", "))
	if c.etcd != "" {
		membership = fmt.Sprintf("provider: etcd\n  etcd:\n    endpoints: [%s]", c.etcd)
	}
	cfg := fmt.Sprintf(`auth:
  keys: ['%s']
  chains:
    events: [header]
    rest: [header]
  rpc_timeout: 10s
plugins:
  dir: %s
storage:
  driver: postgres
  postgres:
    dsn: '%s'
cluster:
  enabled: true
  name: test
  bind: 127.0.0.1:0
  %s
  heartbeat_expiration: 3s
conversations:
  runtime_wait: 1s
limits:
  messages_per_second: 0
%s`, key, filepath.Join(binDir, "plugins"), c.dsn, membership, c.extra)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		c.t.Fatal(err)
	}
	env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, c.env...)
	return &node{t: c.t, name: name, dir: dir, config: path, env: append(env, c.nodeEnv[name]...)}
}

// start runs the node's process.
func (n *node) start() {
	n.t.Helper()
	p, err := testbin.Start(binDir, n.name, n.config, n.dir, n.env)
	if err != nil {
		n.t.Fatal(err)
	}
	n.Process = p
	n.t.Cleanup(func() {
		p.Kill()
		if n.t.Failed() {
			n.t.Logf("--- %s's log, without access lines:\n%s", n.name, lastLines(withoutAccess(p.Log()), 80))
			if dir := os.Getenv("CLUSTER_LOGS"); dir != "" { // the whole logs, for a closer look
				_ = os.WriteFile(filepath.Join(dir, n.t.Name()+"-"+n.name+".log"), []byte(p.Log()), 0o644)
			}
		}
	})
}

func (n *node) waitReady() {
	n.t.Helper()
	if err := n.WaitReady(60 * time.Second); err != nil {
		n.t.Fatal(err)
	}
}

// withoutAccess drops the access log's and the audit log's lines.
func withoutAccess(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, "component=access") && !strings.HasPrefix(l, `{"time"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func lastLines(s string, k int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > k {
		lines = lines[len(lines)-k:]
	}
	return strings.Join(lines, "\n")
}

// request makes a REST call on the node with the key; a []byte body is
// sent as is. A transport error is status 0.
func (n *node) request(method, path string, body any, headers ...string) (int, []byte) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		enc, _ := json.Marshal(b)
		rd = bytes.NewReader(enc)
	}
	req, _ := http.NewRequest(method, n.URL(path), rd)
	req.Header.Set("X-Session-API-Key", key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// createConversation makes a conversation through n.
func (n *node) createConversation() string {
	n.t.Helper()
	code, body := n.request("POST", "/api/conversations", map[string]any{"agent": map[string]any{"kind": "Agent"}})
	if code != http.StatusCreated {
		n.t.Fatalf("create conversation on %s: %d %s", n.name, code, body)
	}
	var c struct{ ID string }
	_ = json.Unmarshal(body, &c)
	return c.ID
}

// post posts a user message with an idempotency key, retrying (with the
// same key) until it is acknowledged or d passes, as a client that must not
// lose its message does. It reports whether it was acknowledged.
func post(nodes func() *node, id, text, key string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		n := nodes()
		code, _ := n.request("POST", "/api/conversations/"+id+"/events", []byte(`{"role":"user","content":"`+text+`"}`), "Idempotency-Key", key)
		if code == http.StatusOK {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// event is the part of a frame the tests read.
type event struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	Key  string `json:"key"`
	LLM  *struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	} `json:"llm_message"`
}

func (e event) text() string {
	if e.LLM == nil || len(e.LLM.Content) == 0 {
		return ""
	}
	return e.LLM.Content[0].Text
}

// reader is one socket that records the log events it receives and how it
// closed. It reconnects, with after_id, through pick when asked to.
type reader struct {
	t      *testing.T
	id     string
	mu     sync.Mutex
	got    []event
	closes []int // close codes seen
	conn   *websocket.Conn
	done   chan struct{}
}

// dial opens a socket to conversation id on n, with replay as its query
// ("" for none: the socket gets only what follows its connect), and waits
// for full_state.
func dial(n *node, id, replay string) (*websocket.Conn, error) {
	path := "/sockets/events/" + id
	if replay != "" {
		path += "?" + replay
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws://"+n.Addr+path, http.Header{"X-Session-Api-Key": {key}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, fmt.Errorf("dial %s on %s: %w (status %d)", id, n.name, err, status)
	}
	c.SetReadLimit(4 << 20)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, b, err := c.ReadMessage()
	var first event
	if err != nil || json.Unmarshal(b, &first) != nil || first.Key != "full_state" {
		c.Close()
		return nil, fmt.Errorf("first frame on %s: %s %v", n.name, b, err)
	}
	return c, nil
}

// follow starts reading c into r until it closes.
func (r *reader) follow(c *websocket.Conn) {
	r.mu.Lock()
	r.conn, r.done = c, make(chan struct{})
	done := r.done
	r.mu.Unlock()
	go func() {
		defer close(done)
		for {
			_ = c.SetReadDeadline(time.Now().Add(120 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil {
				code := 0
				if ce, ok := err.(*websocket.CloseError); ok {
					code = ce.Code
				}
				r.mu.Lock()
				r.closes = append(r.closes, code)
				r.mu.Unlock()
				return
			}
			var e event
			if json.Unmarshal(b, &e) != nil || (e.Kind == "ConversationStateUpdateEvent" && e.Key == "full_state") || e.Kind == "ServerErrorEvent" {
				continue
			}
			r.mu.Lock()
			r.got = append(r.got, e)
			r.mu.Unlock()
		}
	}()
}

// resumeQuery is what r asks for as it reconnects: the events after the
// last one it received, or the whole log when it received none. (Without
// either, a socket gets only what follows its connect, and would miss what
// was appended while it was away.)
func (r *reader) resumeQuery() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return "resend_all=true"
	}
	return "after_id=" + r.got[len(r.got)-1].ID
}

func (r *reader) events() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.got...)
}

// closed reports whether r's socket has closed.
func (r *reader) closed() bool {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// logOf pages through the conversation's log with events/search on n.
func logOf(t *testing.T, n *node, id string) []event {
	t.Helper()
	var out []event
	page := ""
	for {
		path := "/api/conversations/" + id + "/events/search?limit=100"
		if page != "" {
			path += "&page_id=" + page
		}
		code, body := n.request("GET", path, nil)
		if code != http.StatusOK {
			t.Fatalf("events/search on %s: %d %s", n.name, code, body)
		}
		var p struct {
			Items      []event `json:"items"`
			NextPageID *string `json:"next_page_id"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Items...)
		if p.NextPageID == nil {
			return out
		}
		page = *p.NextPageID
	}
}

// sameAsLog checks that got is exactly the log, in order: no gap, no
// duplicate.
func sameAsLog(t *testing.T, what string, got, log []event) {
	t.Helper()
	if len(got) != len(log) {
		t.Errorf("%s: %d events, the log has %d", what, len(got), len(log))
	}
	for i := range min(len(got), len(log)) {
		if got[i].ID != log[i].ID {
			t.Errorf("%s: event %d is %s (%q), the log's is %s (%q)", what, i, got[i].ID, got[i].text(), log[i].ID, log[i].text())
			var g, l []string
			for _, e := range got {
				g = append(g, e.text())
			}
			for _, e := range log {
				l = append(l, e.text())
			}
			t.Logf("got: %v\nlog: %v", g, l)
			return
		}
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signal sends sig to n's process.
func (n *node) signal(sig syscall.Signal) { n.Signal(sig) }
