package plugins_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
)

// binDir holds the real plugin binaries, built once for the package.
var binDir string

// TestMain builds every plugin binary the tests launch: the shipped
// plugins, the fault plugin (also copied as auth-garbage, which prints to
// stdout before its handshake) and the rogue plugin, which breaks protocol
// 3 (also copied as auth-rogue-channel, which breaks protocol 4).
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if dir := os.Getenv(helperEnv); dir != "" {
		return runHelperHost(dir)
	}
	dir, err := os.MkdirTemp("", "agent-server-plugins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	if err := buildPlugins(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build plugins:", err)
		return 1
	}
	defer closeBenchHosts()
	return m.Run()
}

func buildPlugins(dir string) error {
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/agent-server/agent-server/cmd/auth-query",
		"github.com/agent-server/agent-server/cmd/auth-header",
		"github.com/agent-server/agent-server/cmd/auth-bearer",
		"github.com/agent-server/agent-server/cmd/auth-jwt",
		"github.com/agent-server/agent-server/cmd/auth-subprotocol",
		"github.com/agent-server/agent-server/cmd/auth-first_message",
		"github.com/agent-server/agent-server/cmd/auth-oidc",
		"github.com/agent-server/agent-server/cmd/auth-webhook",
		"github.com/agent-server/agent-server/cmd/auth-mtls",
		"github.com/agent-server/agent-server/plugins/internal/faultplugin/cmd/auth-fault",
		"github.com/agent-server/agent-server/plugins/internal/rogueplugin/cmd/auth-rogue",
	)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	for src, dst := range map[string]string{"auth-fault": "auth-garbage", "auth-rogue": "auth-rogue-channel"} {
		b, err := os.ReadFile(filepath.Join(dir, src))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// helperEnv makes the test binary act as a server: it starts a host on the
// plugins in $helperEnv, prints the plugin PIDs and waits to be killed.
const helperEnv = "AGENT_SERVER_PLUGINS_TEST_HOST"

func runHelperHost(dir string) int {
	cfg := config.Default()
	cfg.Auth.Keys = []string{"k"}
	cfg.Plugins.Dir = dir
	h := plugins.NewHost(cfg, nil)
	if err := h.Start(context.Background()); err != nil {
		fmt.Println("error", err)
		return 1
	}
	var pids []string
	for _, hl := range h.Health() {
		for _, p := range hl.Processes {
			pids = append(pids, strconv.Itoa(p.PID))
		}
	}
	fmt.Println("pids", strings.Join(pids, " "))
	select {}
}
