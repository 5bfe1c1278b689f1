package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// restart starts a new agent-server process on s's config file, in s's
// directory, with s's environment, so it opens the same data (the default
// storage.path is relative to that directory). s must have exited.
func (s *server) restart(t *testing.T) *server {
	t.Helper()
	select {
	case <-s.exited:
	default:
		t.Fatal("restart: the old server is still running")
	}
	n := &server{t: t, exited: make(chan struct{}), config: s.config}
	n.cmd = exec.Command(filepath.Join(binDir, "agent-server"), "serve", "--config", s.config, "--addr", "127.0.0.1:0")
	n.cmd.Dir = filepath.Dir(s.config)
	n.cmd.Env = s.cmd.Env
	stderr, err := n.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	n.cmd.Stdout = io.Discard
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			n.logMu.Lock()
			n.log.WriteString(line + "\n")
			n.logMu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case addrCh <- m[1]:
				default:
				}
			}
		}
		n.err = n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(n.kill)
	select {
	case n.addr = <-addrCh:
	case <-n.exited:
		t.Fatalf("restarted server exited before listening: %v\n%s", n.err, n.Log())
	case <-time.After(30 * time.Second):
		t.Fatalf("restarted server did not listen within 30s\n%s", n.Log())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(n.url("/ready"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted server not ready within 30s\n%s", n.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
