package load

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// fakeCluster is nodes in front of one baseline, which stands for the
// cluster's shared state: each node proxies the events WebSocket to it and
// takes REST posts, which it sends to the baseline through one publisher
// socket per conversation, once per Idempotency-Key. Killing a node closes
// its listener and every connection it accepted, as a SIGKILL would.
type fakeCluster struct {
	t     *testing.T
	base  Server
	nodes []*fakeNode
	// dup posts every event twice and ignores the idempotency key, and
	// killAll makes a kill also close the other nodes' sockets: faults the
	// storm's count must catch.
	dup, killAll bool

	mu   sync.Mutex
	pubs map[string]*conn
	seen map[string]bool
}

type fakeNode struct {
	ln    net.Listener
	srv   *http.Server
	mu    sync.Mutex
	conns []net.Conn
}

func (n *fakeNode) Accept() (net.Conn, error) {
	c, err := n.ln.Accept()
	if err == nil {
		n.mu.Lock()
		n.conns = append(n.conns, c)
		n.mu.Unlock()
	}
	return c, err
}
func (n *fakeNode) Close() error   { return n.ln.Close() }
func (n *fakeNode) Addr() net.Addr { return n.ln.Addr() }

// kill closes the node's listener and every connection it accepted (the
// proxied sockets too: http.Server forgets hijacked ones).
func (n *fakeNode) kill() {
	_ = n.ln.Close()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		_ = c.Close()
	}
}

func startFakeCluster(t *testing.T, nodes int, dup, killAll bool) (*fakeCluster, Nodes) {
	t.Helper()
	fc := &fakeCluster{t: t, base: startBaseline(t), dup: dup, killAll: killAll, pubs: map[string]*conn{}, seen: map[string]bool{}}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: fc.base.Addr})
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a killed node's sockets fail mid-copy
	mux := http.NewServeMux()
	mux.Handle("/sockets/events/", proxy)
	mux.HandleFunc("POST /api/conversations/{id}/events", fc.post)
	var n Nodes
	for range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		node := &fakeNode{ln: ln, srv: &http.Server{Handler: mux}}
		go func() { _ = node.srv.Serve(node) }()
		fc.nodes = append(fc.nodes, node)
		n.Servers = append(n.Servers, Server{Addr: ln.Addr().String(), NewConversation: func(context.Context) (string, error) { return uuid.NewString(), nil }})
	}
	n.Kill = func(i int) error {
		fc.nodes[i].kill()
		if fc.killAll {
			for _, node := range fc.nodes {
				node.mu.Lock()
				for _, c := range node.conns {
					_ = c.Close()
				}
				node.mu.Unlock()
			}
		}
		return nil
	}
	t.Cleanup(func() {
		for _, node := range fc.nodes {
			node.kill()
			_ = node.srv.Close()
		}
		fc.mu.Lock()
		defer fc.mu.Unlock()
		for _, c := range fc.pubs {
			c.close()
		}
	})
	return fc, n
}

// post sends the body to the baseline as conversation id's next event,
// unless its idempotency key was seen.
func (fc *fakeCluster) post(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Session-API-Key") != testKey {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	conv, idem := r.PathValue("id"), r.Header.Get("Idempotency-Key")
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.seen[idem] && !fc.dup {
		return
	}
	pub := fc.pubs[conv]
	if pub == nil {
		cl, err := newClient(fc.base.Addr, Credentials{Auth: AuthQuery, Key: testKey})
		if err == nil {
			pub, err = cl.dial(r.Context(), conv, testKey, nil)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fc.pubs[conv] = pub
	}
	for range map[bool]int{false: 1, true: 2}[fc.dup] {
		if err := pub.send(body); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fc.seen[idem] = true
}

// The cluster storm counts exactly, on a fake cluster: only the killed
// node's clients reconnect, each through a survivor, and every client,
// those that stayed up included, has every posted event once; on one
// server a group's sockets drop instead. A node that posts twice, or a
// kill that also closes the survivors' sockets, shows in the count.
func TestClusterStorm(t *testing.T) {
	tests := []struct {
		name         string
		nodes        int
		dup, killAll bool
	}{
		{"three nodes", 3, false, false},
		{"one server, three groups", 1, false, false},
		{"a node posts twice", 3, true, false},
		{"the kill closes every node's sockets", 3, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, n := startFakeCluster(t, tt.nodes, tt.dup, tt.killAll)
			p := ClusterStormParams{
				StormParams: StormParams{
					Credentials: Credentials{Auth: AuthQuery, Key: testKey, JWTSecret: testSecret},
					N:           30, PerConversation: 10, Concurrency: 6, Rate: 20,
					Jitter: 100 * time.Millisecond, Hold: time.Millisecond, Tail: 100 * time.Millisecond, Timeout: 5 * time.Second,
				},
				Victim: 1,
			}
			r, err := ClusterStorm(testCtx(t), n, p)
			if err != nil {
				t.Fatal(err)
			}
			if r.Dropped != 10 || r.Killed != (tt.nodes > 1) || r.Conversations != 3 || r.Posted == 0 || r.Expected != 10*r.Posted {
				t.Errorf("dropped %d, killed %v, conversations %d, posted %d, expected %d; want 10 dropped of 30 over 3 conversations, posts",
					r.Dropped, r.Killed, r.Conversations, r.Posted, r.Expected)
			}
			clean := r.Lost == 0 && r.Duplicates == 0 && r.Errors == 0
			switch {
			case tt.dup:
				if r.Duplicates == 0 {
					t.Errorf("a node posting twice: %d duplicates, want some", r.Duplicates)
				}
			case tt.killAll:
				if r.ErrorsByKind[stormErrClosed] != 20 || r.Lost == 0 {
					t.Errorf("survivors' sockets closed: %d closed errors, %d lost; want 20 closed and losses (%v)", r.ErrorsByKind[stormErrClosed], r.Lost, r.FirstErrors)
				}
			case !clean || r.Resumed != 10 || r.Resume.Count != 10 || r.Reordered != 0:
				t.Errorf("resumed %d, delivered %d of %d, lost %d, duplicates %d, reordered %d, errors %v %v; want 10 resumed, all delivered once",
					r.Resumed, r.Delivered, r.Expected, r.Lost, r.Duplicates, r.Reordered, r.ErrorsByKind, r.FirstErrors)
			}
			if tt.dup || tt.killAll {
				return
			}
			want := []int{5, 0, 5} // the survivors in turn
			if tt.nodes == 1 {
				want = []int{0, 10, 0}
			}
			if got := r.ResumedOn; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
				t.Errorf("resumed on %v, want %v", got, want)
			}
			if r.ReconnectsPerSecond <= 0 || r.AllResumed <= 0 || r.AllResumed > p.Timeout {
				t.Errorf("reconnects/s %v, all resumed after %s; want a rate, and within the timeout (%s)", r.ReconnectsPerSecond, r.AllResumed, p.Timeout)
			}
		})
	}
}

// Bad parameters are refused before anything connects.
func TestClusterStormParams(t *testing.T) {
	srv := Server{Addr: "127.0.0.1:1"}
	creds := Credentials{Auth: AuthQuery, Key: testKey, JWTSecret: testSecret}
	tests := []struct {
		name string
		n    Nodes
		p    ClusterStormParams
		want string
	}{
		{"no node", Nodes{}, ClusterStormParams{StormParams: StormParams{Credentials: creds}}, "no node"},
		{"no kill", Nodes{Servers: []Server{srv, srv}}, ClusterStormParams{StormParams: StormParams{Credentials: creds}}, "Kill"},
		{"one group", Nodes{Servers: []Server{srv}}, ClusterStormParams{StormParams: StormParams{Credentials: creds}, Groups: 1}, "two groups"},
		{"victim", Nodes{Servers: []Server{srv}}, ClusterStormParams{StormParams: StormParams{Credentials: creds}, Victim: 3}, "victim 3 of 3"},
		{"jwt posts", Nodes{Servers: []Server{srv}}, ClusterStormParams{StormParams: StormParams{Credentials: Credentials{Auth: AuthJWT, JWTSecret: testSecret}}}, "key placement"},
		{"short secret", Nodes{Servers: []Server{srv}}, ClusterStormParams{StormParams: StormParams{Credentials: Credentials{Auth: AuthQuery, Key: testKey, JWTSecret: "short"}}}, "32 bytes"},
	}
	for _, tt := range tests {
		_, err := ClusterStorm(testCtx(t), tt.n, tt.p)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}
