// Package release tests agent-server's release artifacts as they are used:
// the goreleaser config covers every built-in plugin, the packaged configs
// load with the installed layout, the Helm chart lints and renders what the
// server needs (helm from bin/tools), and, on request, the real artifacts:
// the deb installed on this machine with dpkg, run and removed, the
// tarball's plugins, and the OCI image pulled from a registry on loopback
// and run from its exported filesystem as its own user.
//
// Tools come from bin/tools (go tool task release:tools). Without one a test
// skips, except under CI=true, where it fails.
package release

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/tests/testbin"
)

// repoRoot is the repository's root directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// missing skips the test with why, or fails it under CI=true.
func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// tool returns the path of a release tool built into bin/tools.
func tool(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", "tools", name)
	if _, err := os.Stat(p); err != nil {
		missing(t, fmt.Sprintf("%s is not built: go tool task release:tools", p))
	}
	return p
}

// run runs a command in dir and returns its combined output; a failure
// fails the test with that output.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// builtinPlugins lists the built-in plugins, from the cmd/auth-<name>
// directories.
func builtinPlugins(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(repoRoot(t), "cmd", "auth-*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no cmd/auth-* directories: %v", err)
	}
	var names []string
	for _, d := range dirs {
		names = append(names, strings.TrimPrefix(filepath.Base(d), "auth-"))
	}
	return names
}

// server is one running agent-server process, started from an installed
// artifact.
type server struct {
	*testbin.Process
}

// start starts cmd, waits for it to log its address and for /ready to
// answer 200, and stops it at the end of the test.
func start(t *testing.T, cmd *exec.Cmd) *server {
	t.Helper()
	p, err := testbin.StartCommand(cmd, cmd.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	if err := p.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return &server{Process: p}
}

// stop sends SIGTERM and expects a clean exit within 20s.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.Stop(20 * time.Second); err != nil {
		t.Fatalf("stop after SIGTERM: %v\n%s", err, s.Log())
	}
}

// converse authenticates with key, creates a conversation over REST, opens
// its socket and expects the full_state event first: what a client does.
func (s *server) converse(t *testing.T, key string) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+s.Addr+"/api/conversations", strings.NewReader(`{"agent":{"kind":"test"}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Session-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create conversation: %d %s\n%s", resp.StatusCode, body, s.Log())
	}
	var conv struct{ ID string }
	if err := json.Unmarshal(body, &conv); err != nil || conv.ID == "" {
		t.Fatalf("create conversation: bad body %s", body)
	}

	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, _, err := d.Dial("ws://"+s.Addr+"/sockets/events/"+conv.ID, http.Header{"X-Session-Api-Key": {key}})
	if err != nil {
		t.Fatalf("open socket: %v\n%s", err, s.Log())
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, frame, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read first frame: %v", err)
	}
	var e struct{ Kind, Key string }
	if err := json.Unmarshal(frame, &e); err != nil {
		t.Fatalf("first frame is not JSON: %s", frame)
	}
	if e.Kind != "ConversationStateUpdateEvent" || e.Key != "full_state" {
		t.Fatalf("first frame = %s, want a ConversationStateUpdateEvent with key full_state", frame)
	}

	// A wrong key is refused before the upgrade.
	_, resp, err = d.Dial("ws://"+s.Addr+"/sockets/events/"+conv.ID, http.Header{"X-Session-Api-Key": {key + "x"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("socket with a wrong key: %v, want 401", err)
	}
}

// goarch is the architecture whose artifacts run on this machine.
var goarch = runtime.GOARCH
