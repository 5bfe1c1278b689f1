package target

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agent-server/agent-server/bench/load"
)

// ClusterSpec says how to start agent-server in cluster mode: Nodes nodes
// of Spec (an agent-server) on loopback with the static provider, sharing
// the PostgreSQL database DSN. Cluster mode and the database are set with
// AGENT_SERVER_... variables alone, as `go tool task cluster` does, on top
// of Spec's generated config.
type ClusterSpec struct {
	Spec
	Nodes               int
	DSN                 string        // the database every node uses
	HeartbeatExpiration time.Duration // cluster.heartbeat_expiration (3s when zero, as in tests/cluster)
	// NodeLog, when set, sees every stderr line of node i (after Spec.Log).
	NodeLog func(i int, line string)
}

// joinTimeout bounds how long every node takes to see every other.
const joinTimeout = 60 * time.Second

// OnPostgres returns spec with storage.driver postgres on the database
// dsn: a single node of the same server, for comparison with a cluster.
func OnPostgres(spec Spec, dsn string) Spec {
	spec.Storage = "postgres"
	spec.Env = append(append([]string(nil), spec.Env...), "AGENT_SERVER_STORAGE__POSTGRES__DSN="+dsn)
	return spec
}

// Cluster is a running set of agent-server nodes.
type Cluster struct {
	Nodes []*Process
}

// StartCluster starts the nodes of spec at once and returns when each is
// ready and sees all of them.
func StartCluster(ctx context.Context, spec ClusterSpec) (*Cluster, error) {
	if spec.Nodes < 1 || spec.DSN == "" {
		return nil, errors.New("target: a cluster needs at least one node and a database")
	}
	if spec.Kind == "" {
		spec.Kind = AgentServer
	}
	if spec.Kind != AgentServer {
		return nil, fmt.Errorf("target: a cluster of %s", spec.Kind)
	}
	hb := spec.HeartbeatExpiration
	if hb <= 0 {
		hb = 3 * time.Second
	}
	ports, err := freePorts(spec.Nodes)
	if err != nil {
		return nil, err
	}
	peers := make([]string, len(ports))
	for i, p := range ports {
		peers[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "bench-" + hex.EncodeToString(b[:])

	c := &Cluster{Nodes: make([]*Process, spec.Nodes)}
	errs := make([]error, spec.Nodes)
	var wg sync.WaitGroup
	for i := range spec.Nodes {
		ns := OnPostgres(spec.Spec, spec.DSN)
		ns.Env = append(ns.Env,
			"AGENT_SERVER_CLUSTER__ENABLED=true",
			"AGENT_SERVER_CLUSTER__NAME="+name,
			"AGENT_SERVER_CLUSTER__PROVIDER=static",
			"AGENT_SERVER_CLUSTER__BIND=127.0.0.1:0",
			fmt.Sprintf("AGENT_SERVER_CLUSTER__STATIC__PORT=%d", ports[i]),
			"AGENT_SERVER_CLUSTER__STATIC__PEERS="+strings.Join(peers, ","),
			"AGENT_SERVER_CLUSTER__HEARTBEAT_EXPIRATION="+hb.String(),
		)
		if see, nodeLog := ns.Log, spec.NodeLog; nodeLog != nil {
			ns.Log = func(line string) {
				if see != nil {
					see(line)
				}
				nodeLog(i, line)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Nodes[i], errs[i] = Start(ctx, ns)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Stop()
		return nil, fmt.Errorf("start the cluster: %w", err)
	}
	if err := c.waitMembers(ctx, spec.Nodes); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// freePorts returns n loopback ports nobody listens on now.
func freePorts(n int) ([]int, error) {
	out := make([]int, n)
	lns := make([]net.Listener, n)
	defer func() {
		for _, ln := range lns {
			if ln != nil {
				ln.Close()
			}
		}
	}()
	for i := range out {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns[i] = ln
		out[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return out, nil
}

// waitMembers waits until every node sees want members.
func (c *Cluster) waitMembers(ctx context.Context, want int) error {
	deadline := time.Now().Add(joinTimeout)
	for {
		ok := true
		for _, p := range c.Nodes {
			t, err := p.topology(ctx)
			if err != nil || len(t.Members) != want {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("target: the %d nodes did not all see each other within %s", want, joinTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// topology is GET /api/cluster's answer.
type topology struct {
	Members []json.RawMessage `json:"members"`
	Owned   int64             `json:"owned"`
}

// topology reads GET /api/cluster.
func (p *Process) topology(ctx context.Context) (topology, error) {
	var t topology
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+"/api/cluster", nil)
	if err != nil {
		return t, err
	}
	req.Header.Set("X-Session-API-Key", p.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("GET /api/cluster: %d %s", resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &t); err != nil {
		return t, fmt.Errorf("GET /api/cluster: %w", err)
	}
	return t, nil
}

// Owned reads how many conversations each node owns; -1 for a node that
// has exited.
func (c *Cluster) Owned(ctx context.Context) ([]int64, error) {
	out := make([]int64, len(c.Nodes))
	for i, p := range c.Nodes {
		if p.Exited() {
			out[i] = -1
			continue
		}
		t, err := p.topology(ctx)
		if err != nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
		out[i] = t.Owned
	}
	return out, nil
}

// Kill ends node i and its plugins at once (SIGKILL to its process group)
// and waits for it to be gone.
func (c *Cluster) Kill(i int) error {
	if i < 0 || i >= len(c.Nodes) {
		return fmt.Errorf("target: no node %d", i)
	}
	p := c.Nodes[i]
	if err := syscall.Kill(-p.PID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill node %d: %w", i, err)
	}
	<-p.exited
	p.cleanup()
	return nil
}

// CPU is the CPU time the nodes that are up (with their plugins) have
// used so far.
func (c *Cluster) CPU() (time.Duration, error) {
	var total time.Duration
	for i, p := range c.Nodes {
		if p.Exited() {
			continue
		}
		d, err := p.CPU()
		if err != nil {
			return 0, fmt.Errorf("node %d: %w", i, err)
		}
		total += d
	}
	return total, nil
}

// ErrorLines counts the stderr lines the nodes logged at level ERROR.
func (c *Cluster) ErrorLines() int {
	n := 0
	for _, p := range c.Nodes {
		n += p.ErrorLines()
	}
	return n
}

// Stop stops every node that is still up, at once.
func (c *Cluster) Stop() error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, p := range c.Nodes {
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.Exited() {
				p.cleanup()
				return
			}
			errs[i] = p.Stop()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Load describes the cluster to the cluster scenarios: node i's Server
// creates conversations through node i and reads the CPU of every node.
func (c *Cluster) Load() load.Nodes {
	n := load.Nodes{Owned: c.Owned, Kill: c.Kill}
	for _, p := range c.Nodes {
		s := p.Server()
		s.CPU, s.Memory = c.CPU, nil
		n.Servers = append(n.Servers, s)
	}
	return n
}
