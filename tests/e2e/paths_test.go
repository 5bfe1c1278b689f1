package e2e

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A config file's relative paths resolve against the file's directory, so
// a packaged layout works wherever the server is started: here the working
// directory is elsewhere, the plugins sit beside the config and the store
// below it.
func TestRelativePathsFollowTheConfigFile(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	for _, p := range []string{"query", "header", "bearer", "subprotocol", "first_message"} {
		copyFile(t, filepath.Join(binDir, "plugins", "auth-"+p), filepath.Join(root, "lib", "plugins", "auth-"+p))
	}
	cfg := "auth:\n  keys: [path-key]\nplugins:\n  dir: ../lib/plugins\nstorage:\n  path: ./data/agent-server.db\n"
	if err := os.MkdirAll(etc, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(etc, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	s := launchIn(t, elsewhere, path, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + elsewhere, "AGENT_SERVER_AUTH__RPC_TIMEOUT=10s"})
	id := s.createConversation(t, "path-key")
	c, _, err := s.dial(t, "/sockets/events/"+id, hdr("X-Session-API-Key", "path-key"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	mustReady(t, c)
	if _, err := os.Stat(filepath.Join(etc, "data", "agent-server.db")); err != nil {
		t.Errorf("the store is not below the config file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "data")); !os.IsNotExist(err) {
		t.Errorf("a data directory appeared in the working directory (%v)", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
