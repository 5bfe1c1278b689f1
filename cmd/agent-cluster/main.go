// Command agent-cluster runs a local agent-server cluster for trying cluster
// mode out: a throwaway PostgreSQL and several nodes with the static
// provider on loopback, each configured from config.yaml plus
// AGENT_SERVER_... variables only, the way a deployment would. It prints how
// to reach each node and stops everything on Ctrl-C. A node that exits
// asking to be restarted (status 75, after it was dropped from the cluster)
// is started again, as a supervisor would.
//
//	go tool task cluster
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

// exitRestart is the status with which a node asks to be started again.
const exitRestart = 75

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent-cluster:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("bin", "bin/agent-server", "the agent-server binary")
	config := flag.String("config", "config.yaml", "the base configuration every node reads")
	nodes := flag.Int("nodes", 3, "how many nodes")
	port := flag.Int("port", 8001, "the first node's HTTP port; node i listens on port+i")
	admin := flag.Int("admin-port", 9001, "the first node's admin port (/metrics, /ready); node i uses admin-port+i")
	membership := flag.Int("membership-port", 7421, "the first node's static membership port; node i uses membership-port+i")
	logs := flag.String("logs", "bin/cluster", "where each node's log goes")
	flag.Parse()
	if *nodes < 1 {
		return errors.New("-nodes must be at least 1")
	}
	if _, err := os.Stat(*bin); err != nil {
		return fmt.Errorf("%w (build it with go tool task build)", err)
	}
	if err := os.MkdirAll(*logs, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Fprintln(os.Stderr, "starting PostgreSQL...")
	pg, err := pgtest.New()
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	defer pg.Remove()

	key := os.Getenv("SESSION_API_KEY")
	if key == "" {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		key = base64.RawURLEncoding.EncodeToString(b)
	}
	peers := make([]string, *nodes)
	for i := range peers {
		peers[i] = fmt.Sprintf("127.0.0.1:%d", *membership+i)
	}
	var wg sync.WaitGroup
	ns := make([]*node, *nodes)
	for i := range ns {
		ns[i] = &node{
			name:  fmt.Sprintf("node%d", i+1),
			addr:  fmt.Sprintf("127.0.0.1:%d", *port+i),
			admin: fmt.Sprintf("127.0.0.1:%d", *admin+i),
			bin:   *bin,
			args: []string{"serve", "--config", *config, "--addr", fmt.Sprintf("127.0.0.1:%d", *port+i),
				"--admin-addr", fmt.Sprintf("127.0.0.1:%d", *admin+i)},
			env: append(os.Environ(),
				"SESSION_API_KEY="+key,
				"AGENT_SERVER_STORAGE__DRIVER=postgres",
				"AGENT_SERVER_STORAGE__POSTGRES__DSN="+pg.DSN("postgres"),
				"AGENT_SERVER_CLUSTER__ENABLED=true",
				"AGENT_SERVER_CLUSTER__NAME=local",
				"AGENT_SERVER_CLUSTER__PROVIDER=static",
				"AGENT_SERVER_CLUSTER__BIND=127.0.0.1:0",
				fmt.Sprintf("AGENT_SERVER_CLUSTER__STATIC__PORT=%d", *membership+i),
				"AGENT_SERVER_CLUSTER__STATIC__PEERS="+strings.Join(peers, ","),
			),
			logPath: filepath.Join(*logs, fmt.Sprintf("node%d.log", i+1)),
		}
		wg.Add(1)
		go func(n *node) { defer wg.Done(); n.supervise(ctx) }(ns[i])
	}
	for _, n := range ns {
		if err := waitReady(ctx, n.addr, 60*time.Second); err != nil {
			stop()
			wg.Wait()
			return fmt.Errorf("%s: %w (its log: %s)", n.name, err, n.logPath)
		}
	}
	fmt.Printf("\nA %d-node cluster is up; PostgreSQL is %s\n\n", *nodes, pg.DSN("postgres"))
	for _, n := range ns {
		fmt.Printf("  %s  http://%s  metrics http://%s/metrics  log %s\n", n.name, n.addr, n.admin, n.logPath)
	}
	fmt.Printf(`
Any node serves any conversation. Open a node's console in a browser (the
key goes in its key box), or use the API:

  curl -s -H 'X-Session-API-Key: %[1]s' -H 'Content-Type: application/json' -d '{}' http://%[2]s/api/conversations
  curl -s -H 'X-Session-API-Key: %[1]s' http://%[2]s/api/cluster

Sockets: ws://<node>/sockets/events/<conversation id>, with the key in the
X-Session-API-Key header. Stop a node (kill -STOP, kill -9) and watch its
clients resume on another.

Session API key: %[1]s
Ctrl-C stops everything.
`, key, ns[0].addr)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "\nstopping...")
	wg.Wait()
	return nil
}

// node is one agent-server process, restarted when it asks to be.
type node struct {
	name, addr, admin, bin, logPath string
	args, env                       []string
}

// supervise runs the node until ctx ends, then stops it with SIGTERM.
func (n *node) supervise(ctx context.Context) {
	for ctx.Err() == nil {
		err := n.runOnce(ctx)
		var exit *exec.ExitError
		switch {
		case ctx.Err() != nil:
			return
		case errors.As(err, &exit) && exit.ExitCode() == exitRestart:
			fmt.Fprintf(os.Stderr, "%s left the cluster and asked to be restarted; starting it again\n", n.name)
		default:
			fmt.Fprintf(os.Stderr, "%s exited: %v (see %s); not restarting it\n", n.name, err, n.logPath)
			return
		}
	}
}

func (n *node) runOnce(ctx context.Context) error {
	log, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(n.bin, n.args...)
	cmd.Env = n.env
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return <-done
		}
	}
}

// waitReady waits until addr's /ready answers 200.
func waitReady(ctx context.Context, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		res, err := http.Get("http://" + addr + "/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
