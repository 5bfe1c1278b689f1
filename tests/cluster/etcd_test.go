package cluster

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/agent-server/agent-server/tests/testbin"
)

// startEtcd runs a single-member etcd server of its own on loopback, in a
// temporary data directory, and returns its client endpoint. It stops the
// server when the test ends. Without the etcd binary the test skips, naming
// the Debian package, except under CI=true, where it fails.
func startEtcd(t *testing.T) string {
	t.Helper()
	bin := testbin.Program(t, "etcd-server", "etcd")
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	cmd := exec.Command(bin,
		"--name", "test",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer,
		"--log-level", "warn",
	)
	var log testbin.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.Env = []string{"HOME=" + dir}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("--- etcd's log:\n%s", lastLines(log.String(), 40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(client + "/health")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return client
			}
		}
		select {
		case <-exited:
			t.Fatalf("etcd exited before it was healthy:\n%s", lastLines(log.String(), 40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not healthy after 30s:\n%s", lastLines(log.String(), 40))
		}
	}
}
