package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runCLI runs the server binary with args and a config file body, returning
// combined output and the exit code.
func runCLI(t *testing.T, cfg string, env []string, args ...string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	full := withPluginDir(cfg)
	if err := os.WriteFile(path, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "agent-server"), append(args, "--config", path)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestCLI(t *testing.T) {
	tests := []struct {
		name     string
		cfg      string
		env      []string
		args     []string
		wantCode int
		want     []string // substrings of the output
		never    []string // substrings that must not appear
	}{
		{"config check masks secrets", "auth:\n  keys: ['top-secret-key']\nplugins:\n  instances:\n    jwt:\n      config:\n        secret: jwt-secret-value\n", nil,
			[]string{"config", "check"}, 0, []string{"config is valid", "addr: 127.0.0.1:8000", "'***'"}, []string{"top-secret-key", "jwt-secret-value"}},
		{"config check names a bad key", "server:\n  adress: x\n", nil, []string{"config", "check"}, 1, []string{"unknown key server.adress"}, nil},
		{"env overrides are validated", "", []string{"AGENT_SERVER_LIMITS__IDLE_TIMEOUT=soon"}, []string{"config", "check"}, 1, []string{"limits.idle_timeout"}, nil},
		{"plugins list", "", nil, []string{"plugins", "list"}, 0, []string{"query", "header:X-Session-Api-Key", "query:session_api_key"}, nil},
		{"plugins verify unpinned", "", nil, []string{"plugins", "verify"}, 0, []string{"not pinned"}, nil},
		{"plugins verify mismatch", "plugins:\n  instances:\n    query:\n      sha256: '" + strings.Repeat("0", 64) + "'\n", nil, []string{"plugins", "verify"}, 1,
			[]string{"FAIL", "auth-query", strings.Repeat("0", 64)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := runCLI(t, tt.cfg, tt.env, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tt.never {
				if strings.Contains(out, n) {
					t.Errorf("output contains %q:\n%s", n, out)
				}
			}
		})
	}
	out, err := exec.Command(filepath.Join(binDir, "agent-server"), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "agent-server ") {
		t.Errorf("version: %v %s", err, out)
	}
}

// With no key configured, the server generates one, prints it once to
// stderr with an example, never logs it, and it works.
func TestGeneratedKey(t *testing.T) {
	s := startServer(t, "")
	m := regexp.MustCompile(`X-Session-API-Key: ([A-Za-z0-9_-]{40,})`).FindStringSubmatch(s.Log())
	if m == nil {
		t.Fatalf("no generated key banner in stderr:\n%s", s.Log())
	}
	k := m[1]
	if n := strings.Count(s.Log(), k); n != 2 { // the key line and the curl example
		t.Errorf("generated key printed %d times, want exactly the banner's 2", n)
	}
	sc := bufio.NewScanner(strings.NewReader(s.Log()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "level=") && strings.Contains(sc.Text(), k) {
			t.Errorf("a log line contains the generated key: %s", sc.Text())
		}
	}
	if code, body := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", k); code != 200 {
		t.Fatalf("generated key refused: %d %s", code, body)
	}
}

func TestAuthDisabledWarns(t *testing.T) {
	s := startServer(t, "auth:\n  disabled: true\n")
	if !strings.Contains(s.Log(), "DISABLED") {
		t.Errorf("no warning that auth is disabled:\n%s", s.Log())
	}
	if code, _ := s.request(t, "GET", "/api/conversations/count", nil); code != 200 {
		t.Errorf("disabled auth refused a request: %d", code)
	}
}

// Keys from the OpenHands environment variables work as they do upstream.
func TestKeysFromOpenHandsEnv(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		good []string
	}{
		{"json list", []string{`OH_SESSION_API_KEYS=["a-key","b-key"]`}, []string{"a-key", "b-key"}},
		{"numbered", []string{"OH_SESSION_API_KEYS_0=n0", "OH_SESSION_API_KEYS_1=n1", "OH_SESSION_API_KEYS_3=gap"}, []string{"n0", "n1"}},
		{"legacy", []string{"SESSION_API_KEY=legacy"}, []string{"legacy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, "", tt.env...)
			for _, k := range tt.good {
				if code, _ := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", k); code != 200 {
					t.Errorf("key %q refused: %d", k, code)
				}
			}
			if code, _ := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", "gap"); code != 401 {
				t.Errorf("key after a gap accepted: %d", code)
			}
		})
	}
}
