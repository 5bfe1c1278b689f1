// Package e2e runs the real agent-server binary with real plugin processes
// on an ephemeral loopback port and drives it with gorilla/websocket and
// net/http clients, the way users run it.
package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
	"github.com/agent-server/agent-server/tests/testbin"
)

// binDir holds the server and plugin binaries built once for the package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-server-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(dir string) error {
	return testbin.Build(dir, "query", "header", "bearer", "jwt", "subprotocol", "first_message", "oidc", "webhook", "mtls")
}

// withPluginDir points plugins.dir at the freshly built plugins, inside the
// config's own plugins: block when it has one.
func withPluginDir(cfg string) string {
	line := "  dir: " + filepath.Join(binDir, "plugins") + "\n"
	if strings.Contains(cfg, "\nplugins:\n") || strings.HasPrefix(cfg, "plugins:\n") {
		if strings.HasPrefix(cfg, "plugins:\n") {
			return "plugins:\n" + line + cfg[len("plugins:\n"):]
		}
		return strings.Replace(cfg, "\nplugins:\n", "\nplugins:\n"+line, 1)
	}
	return cfg + "plugins:\n" + line
}

// server is one running agent-server process.
type server struct {
	t        *testing.T
	cmd      *exec.Cmd
	addr     string       // host:port it listens on
	tls      *tls.Config  // the clients' TLS config when it serves TLS (server.tls), else nil
	httpc    *http.Client // trusts tls; nil for plain HTTP
	config   string       // the config file it was started with
	logMu    sync.Mutex
	log      bytes.Buffer // everything it wrote to stderr
	exited   chan struct{}
	err      error
	noWait   bool   // spawn returns once it listens, ready or not
	listenOn string // the --addr it was started with; "" for an ephemeral port
}

var (
	listening      = regexp.MustCompile(`msg=listening addr=(\S+)`)
	adminListening = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)
)

// adminAddr returns the admin listener's address (the harness starts it on
// a free port), waiting up to 10 s for its log line.
func (s *server) adminAddr(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := adminListening.FindStringSubmatch(s.Log()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no admin listener in the log:\n%s", s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startServer writes cfg (YAML) to a file and runs `agent-server serve` on
// an ephemeral port, with env added to a minimal environment. It waits until
// /ready answers 200.
func startServer(t *testing.T, cfg string, env ...string) *server {
	t.Helper()
	return startServerOpts(t, false, cfg, env...)
}

// startServerNotReady is startServer without waiting for /ready.
func startServerNotReady(t *testing.T, cfg string, env ...string) *server {
	t.Helper()
	return startServerOpts(t, true, cfg, env...)
}

func startServerOpts(t *testing.T, noWait bool, cfg string, env ...string) *server {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(withPluginDir(cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A generous plugin deadline: on a loaded CI machine one scheduling
	// stall must not turn into a 503; the deadline itself is tested in plugins.
	env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "AGENT_SERVER_AUTH__RPC_TIMEOUT=10s"}, env...)
	return spawn(t, &server{t: t, exited: make(chan struct{}), config: path, noWait: noWait}, dir, env)
}

// launch runs `agent-server serve --config path` on an ephemeral port in
// path's directory with exactly env, and waits until /ready answers 200.
func launch(t *testing.T, path string, env []string) *server {
	t.Helper()
	return launchIn(t, filepath.Dir(path), path, env)
}

// launchIn is launch with the working directory cwd.
func launchIn(t *testing.T, cwd, path string, env []string) *server {
	t.Helper()
	return spawn(t, &server{t: t, exited: make(chan struct{}), config: path}, cwd, env)
}

// launchAt is launchIn listening on addr.
func launchAt(t *testing.T, cwd, path string, env []string, addr string) *server {
	t.Helper()
	return spawn(t, &server{t: t, exited: make(chan struct{}), config: path, listenOn: addr}, cwd, env)
}

// launchWith is launchIn for a server that serves TLS when clientTLS, the
// clients' TLS config, is not nil.
func launchWith(t *testing.T, cwd, path string, env []string, clientTLS *tls.Config) *server {
	t.Helper()
	s := &server{t: t, exited: make(chan struct{}), config: path, tls: clientTLS}
	if clientTLS != nil {
		s.httpc = &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	}
	return spawn(t, s, cwd, env)
}

// spawn starts s's process and waits for it to listen, and unless
// s.noWait, to be ready.
func spawn(t *testing.T, s *server, cwd string, env []string) *server {
	t.Helper()
	path, addr := s.config, s.listenOn
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	s.cmd = exec.Command(filepath.Join(binDir, "agent-server"), "serve", "--config", path, "--addr", addr, "--admin-addr", "127.0.0.1:0")
	s.cmd.Dir = cwd
	s.cmd.Env = env
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout = io.Discard
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.logMu.Lock()
			s.log.WriteString(line + "\n")
			s.logMu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case addrCh <- m[1]:
				default:
				}
			}
		}
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.kill)
	select {
	case s.addr = <-addrCh:
	case <-s.exited:
		t.Fatalf("server exited before listening: %v\n%s", s.err, s.Log())
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not listen within 30s\n%s", s.Log())
	}
	if !s.noWait {
		s.waitReady(t, 30*time.Second)
	}
	return s
}

// waitReady waits up to d for /ready to answer 200.
func (s *server) waitReady(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		resp, err := s.client().Get(s.url("/ready"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-s.exited:
			t.Fatalf("server exited: %v\n%s", s.err, s.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready within %s\n%s", d, s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rewrite replaces the server's config file with cfg (plugins.dir added),
// atomically, as an editor or a config-management tool would.
func (s *server) rewrite(t *testing.T, cfg string) {
	t.Helper()
	tmp := s.config + ".tmp"
	if err := os.WriteFile(tmp, []byte(withPluginDir(cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, s.config); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits up to d for the server's log to contain substr.
func (s *server) waitLog(t *testing.T, substr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(s.Log(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("server log has no %q after %s:\n%s", substr, d, s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log returns what the server has written to stderr so far.
func (s *server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

func (s *server) url(path string) string {
	if s.tls != nil {
		return "https://" + s.addr + path
	}
	return "http://" + s.addr + path
}

func (s *server) wsURL(path string) string {
	if s.tls != nil {
		return "wss://" + s.addr + path
	}
	return "ws://" + s.addr + path
}

// client is the HTTP client for the server: the default one, or one that
// trusts its TLS certificate.
func (s *server) client() *http.Client {
	if s.httpc == nil {
		return http.DefaultClient
	}
	return s.httpc
}

func (s *server) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// stop sends SIGTERM and waits for the exit, up to d.
func (s *server) stop(d time.Duration) error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return s.err
	case <-time.After(d):
		return fmt.Errorf("server still running %s after SIGTERM", d)
	}
}

// request makes a REST call with optional headers and JSON body (a []byte
// is sent as it is, anything else is marshaled), returning the status and
// body.
func (s *server) request(t *testing.T, method, path string, body any, headers ...string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte: // sent as it is
		rd = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, s.url(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// createConversation makes a conversation through REST and returns its id.
func (s *server) createConversation(t *testing.T, key string) string {
	t.Helper()
	code, body := s.request(t, "POST", "/api/conversations", map[string]any{"agent": map[string]any{"kind": "test"}}, "X-Session-API-Key", key)
	if code != http.StatusCreated {
		t.Fatalf("create conversation: %d %s", code, body)
	}
	var c struct{ ID string }
	if err := json.Unmarshal(body, &c); err != nil || c.ID == "" {
		t.Fatalf("create conversation: bad body %s", body)
	}
	return c.ID
}

// dial opens a socket; it returns the conn (nil on a refused handshake) and
// the handshake response.
func (s *server) dial(t *testing.T, path string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: s.tls}
	c, resp, err := d.Dial(s.wsURL(path), header)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

// event is the part of a server frame the tests look at.
type event struct {
	ID        string          `json:"id"`
	Timestamp string          `json:"timestamp"`
	Source    string          `json:"source"`
	Kind      string          `json:"kind"`
	Key       string          `json:"key"`
	Code      string          `json:"code"`
	Detail    string          `json:"detail"`
	Value     json.RawMessage `json:"value"`
	LLM       *struct {
		Role    string `json:"role"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"llm_message"`
}

// text returns a MessageEvent's first text part.
func (e event) text() string {
	if e.LLM == nil || len(e.LLM.Content) == 0 {
		return ""
	}
	return e.LLM.Content[0].Text
}

// read reads one event frame within d.
func read(t *testing.T, c *websocket.Conn, d time.Duration) (event, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, b, err := c.ReadMessage()
	if err != nil {
		return event{}, err
	}
	var e event
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("frame is not JSON: %s", b)
	}
	return e, nil
}

// mustReady reads the first frame and checks it is the full_state event.
func mustReady(t *testing.T, c *websocket.Conn) {
	t.Helper()
	e, err := read(t, c, 30*time.Second)
	if err != nil {
		t.Fatalf("read first frame: %v", err)
	}
	if e.Kind != "ConversationStateUpdateEvent" || e.Key != "full_state" {
		t.Fatalf("first frame = %+v, want ConversationStateUpdateEvent full_state", e)
	}
}

// closeCode reads until the socket closes and returns the close code and text.
func closeCode(t *testing.T, c *websocket.Conn, d time.Duration) (int, string) {
	t.Helper()
	code, text, err := awaitClose(c, d)
	if err != nil {
		t.Fatal(err)
	}
	return code, text
}

// awaitClose is closeCode without testing.T, for use from goroutines.
func awaitClose(c *websocket.Conn, d time.Duration) (int, string, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if asCloseError(err, &ce) {
			return ce.Code, ce.Text, nil
		}
		return 0, "", fmt.Errorf("socket ended without a close frame: %w", err)
	}
}

func asCloseError(err error, target **websocket.CloseError) bool {
	ce, ok := err.(*websocket.CloseError)
	if ok {
		*target = ce
	}
	return ok
}

func send(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}
