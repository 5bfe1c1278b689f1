package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's "Writing an auth plugin" example is real: extract it, build
// it with go build like any plugin, put it in a chain, and authenticate.
func TestReadmePluginExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	if i := strings.Index(section, "## Writing an auth plugin"); i >= 0 {
		section = section[i:]
	} else {
		t.Fatal(`README has no "Writing an auth plugin" section`)
	}
	code := regexp.MustCompile("(?s)```go\n(.*?)```").FindStringSubmatch(section)
	yaml := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(section)
	if code == nil || yaml == nil {
		t.Fatal("README plugin section lacks its Go or YAML block")
	}
	// Build it as a plugin author would: its own module, requiring this one
	// (replaced by the checkout), outside the repository tree.
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gomod := "module example.com/auth-team\n\ngo 1.26\n\nrequire github.com/agent-server/agent-server v0.0.0\n\nreplace github.com/agent-server/agent-server => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{"go.mod": []byte(gomod), "go.sum": sum, "main.go": []byte(code[1])} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plugins := t.TempDir() // a plugin dir of its own: the shared one stays as built
	for _, p := range []string{"auth-query", "auth-header", "auth-bearer"} {
		b, err := os.ReadFile(filepath.Join(binDir, "plugins", p)) // the host refuses symlinks
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(plugins, p), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-mod=mod", "-o", filepath.Join(plugins, "auth-team"), ".")
	build.Dir = dir
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the README example does not build: %v\n%s", err, b)
	}

	// The README's YAML, without its pin placeholder.
	cfg := regexp.MustCompile(`(?m)^\s*sha256: <.*\n`).ReplaceAllString(yaml[1], "")
	s := startServer(t, cfg, "SESSION_API_KEY="+key, "AGENT_SERVER_PLUGINS__DIR="+plugins)
	id := s.createConversation(t, key)
	for _, tt := range []struct {
		token string
		want  int
	}{{"password", 101}, {"wrong", 401}} {
		c, resp, err := s.dial(t, "/sockets/events/"+id, http.Header{"X-Team-Token": {tt.token}})
		switch {
		case tt.want == 101 && err != nil:
			t.Fatalf("team token refused: %v (status %d)", err, status(resp))
		case tt.want == 101:
			mustReady(t, c)
		case err == nil || status(resp) != tt.want:
			t.Fatalf("token %q: status %d, want %d", tt.token, status(resp), tt.want)
		}
	}
}
