package plugins_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// v1Marker is what plugins/plugin.go says while the SDK speaks protocol 1.
const v1Marker = "const ProtocolVersion = 1\n"

// buildV1Plugin builds cmd/auth-header from the newest commit whose SDK
// spoke protocol 1: a plugin exactly as a third party built it before
// protocol 2. It skips when the repository's history is not at hand.
func buildV1Plugin(t *testing.T) string {
	t.Helper()
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("no git repository to take the protocol 1 SDK from: %v", err)
	}
	repo := strings.TrimSpace(string(root))
	git := func(args ...string) ([]byte, error) {
		return exec.Command("git", append([]string{"-C", repo}, args...)...).Output()
	}
	commits, err := git("log", "--format=%H", "--", "plugins/plugin.go")
	if err != nil {
		t.Skipf("git log: %v", err)
	}
	var commit string
	for _, c := range strings.Fields(string(commits)) {
		if src, err := git("show", c+":plugins/plugin.go"); err == nil && strings.Contains(string(src), v1Marker) {
			commit = c
			break
		}
	}
	if commit == "" {
		t.Skip("the history holds no commit with the protocol 1 SDK (a shallow clone?)")
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", repo, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "auth-header-v1")
	build := exec.Command("go", "build", "-o", bin, "./cmd/auth-header")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the protocol 1 plugin from %s: %v\n%s", commit, err, out)
	}
	return bin
}

// A plugin built against the protocol 1 SDK keeps working with this host:
// the handshake settles on version 1 and it decides as before.
func TestProtocol1PluginKeepsWorking(t *testing.T) {
	bin := buildV1Plugin(t)
	cfg := testConfig(t, false)
	cfg.Auth.Chains = config.Chains{REST: []string{"old"}}
	cfg.Plugins.Instances = map[string]config.Plugin{"old": {Path: bin}}
	h, logs := startHost(t, cfg)
	c := chain(t, h, core.RouteREST)
	rest := func(key string) *core.Request {
		r := request("", "X-Session-API-Key", key)
		r.Route = core.RouteREST
		return r
	}
	if res := c.Authenticate(context.Background(), rest(validKey)); res.Decision != core.Allow || res.Authenticator != "old" {
		t.Errorf("valid key through the protocol 1 plugin: got %s by %q (%v)", res.Decision, res.Authenticator, res.Err)
	}
	if res := c.Authenticate(context.Background(), rest("wrong")); res.Decision != core.Deny {
		t.Errorf("wrong key through the protocol 1 plugin: got %s, want deny", res.Decision)
	}
	if !strings.Contains(logs.String(), "protocol=1") {
		t.Errorf("the host did not log the negotiated protocol 1:\n%s", logs)
	}
}
