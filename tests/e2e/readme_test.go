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
	// Build inside the module (testdata is outside ./...), as a user's
	// cmd/auth-team would be.
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("testdata", "readme-plugin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir); os.Remove("testdata") })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(code[1]), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(binDir, "plugins", "auth-team")
	if b, err := exec.Command("go", "build", "-o", out, "./"+dir).CombinedOutput(); err != nil {
		t.Fatalf("the README example does not build: %v\n%s", err, b)
	}
	t.Cleanup(func() { os.Remove(out) })

	// The README's YAML, without its pin placeholder.
	cfg := regexp.MustCompile(`(?m)^\s*sha256: <.*\n`).ReplaceAllString(yaml[1], "")
	s := startServer(t, cfg, "SESSION_API_KEY="+key)
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
