package plugins_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// buildOldPlugin builds cmd/auth-header from the newest commit whose SDK
// spoke protocol version: a plugin exactly as a third party built it then.
// It skips when the repository's history is not at hand.
func buildOldPlugin(t *testing.T, version int) string {
	t.Helper()
	marker := fmt.Sprintf("const ProtocolVersion = %d\n", version)
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
		if src, err := git("show", c+":plugins/plugin.go"); err == nil && strings.Contains(string(src), marker) {
			commit = c
			break
		}
	}
	if commit == "" {
		t.Skipf("the history holds no commit with the protocol %d SDK (a shallow clone?)", version)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", repo, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), fmt.Sprintf("auth-header-v%d", version))
	build := exec.Command("go", "build", "-o", bin, "./cmd/auth-header")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the protocol %d plugin from %s: %v\n%s", version, commit, err, out)
	}
	return bin
}

// Plugins built against the protocol 1, 2 and 3 SDKs keep working with
// this host: the handshake settles on their version, the unary
// Authenticate (1 and 2) or the gRPC stream (3) carries their calls, and
// they decide as before.
func TestOlderPluginsKeepWorking(t *testing.T) {
	for _, version := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("protocol %d", version), func(t *testing.T) {
			bin := buildOldPlugin(t, version)
			cfg := testConfig(t, false)
			cfg.Auth.Chains = config.Chains{REST: []string{"old"}}
			cfg.Plugins.Instances = map[string]config.Plugin{"old": {Path: bin}}
			h, logs := startHost(t, cfg)
			checkKeyPlugin(t, chain(t, h, core.RouteREST), "old")
			if want := fmt.Sprintf("protocol=%d", version); !strings.Contains(logs.String(), want) {
				t.Errorf("the host did not log the negotiated %s:\n%s", want, logs)
			}
		})
	}
}

// A host that predates protocol 3, or 4 (here, this host held to protocol
// 2 or 3), still reaches a plugin built against this SDK: over the unary
// call, or over the gRPC stream.
func TestOlderHostReachesThisPlugin(t *testing.T) {
	for _, version := range []uint{2, 3} {
		t.Run(fmt.Sprintf("protocol %d", version), func(t *testing.T) {
			cfg := testConfig(t, false)
			cfg.Auth.Chains = config.Chains{REST: []string{"header"}}
			h, logs := startHostAt(t, cfg, version)
			checkKeyPlugin(t, chain(t, h, core.RouteREST), "header")
			if want := fmt.Sprintf("protocol=%d", version); !strings.Contains(logs.String(), want) {
				t.Errorf("the host did not log %s:\n%s", want, logs)
			}
		})
	}
}

// checkKeyPlugin checks that a session-key plugin called name allows the
// valid key and denies a wrong one through c.
func checkKeyPlugin(t *testing.T, c *core.Chain, name string) {
	t.Helper()
	rest := func(key string) *core.Request {
		r := request("", "X-Session-API-Key", key)
		r.Route = core.RouteREST
		return r
	}
	if res := c.Authenticate(context.Background(), rest(validKey)); res.Decision != core.Allow || res.Authenticator != name {
		t.Errorf("valid key: got %s by %q (%v)", res.Decision, res.Authenticator, res.Err)
	}
	if res := c.Authenticate(context.Background(), rest("wrong")); res.Decision != core.Deny {
		t.Errorf("wrong key: got %s, want deny", res.Decision)
	}
}
