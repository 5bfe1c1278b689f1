// Package browser drives the web console in headless Chromium against the
// real agent-server binary and real plugin processes. It needs a chromium
// binary: without one it skips, except in CI (CI=true), where it fails.
package browser

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/agent-server/agent-server/tests/testbin"
)

// binDir holds the server and plugin binaries, built once for the package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-server-browser-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	if chromiumPath() != "" || os.Getenv("CI") == "true" {
		start := time.Now()
		if err := buildBinaries(); err != nil {
			fmt.Fprintln(os.Stderr, "build binaries:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "built the server and plugins in %s\n", time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinaries builds the server and the plugins the default chains use.
func buildBinaries() error {
	return testbin.Build(binDir, "query", "header", "bearer", "subprotocol", "first_message", "jwt")
}

// server is one running agent-server process.
type server struct {
	cmd    *exec.Cmd
	addr   string
	logMu  *sync.Mutex
	log    *bytes.Buffer // everything every process of this server wrote to stderr
	exited chan struct{}
}

var listening = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startServer runs `agent-server serve` with the config file at path on
// addr (127.0.0.1:0 for any port), appending its stderr to log, and waits
// until /ready answers 200.
func startServer(t *testing.T, path, addr string, logMu *sync.Mutex, log *bytes.Buffer) *server {
	t.Helper()
	s := &server{exited: make(chan struct{}), logMu: logMu, log: log}
	s.cmd = exec.Command(filepath.Join(binDir, "agent-server"), "serve", "--config", path, "--addr", addr, "--admin-addr", "127.0.0.1:0")
	s.cmd.Dir = filepath.Dir(path)
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Dir(path)}
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
			logMu.Lock()
			log.WriteString(line + "\n")
			logMu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case addrCh <- m[1]:
				default:
				}
			}
		}
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.kill)
	select {
	case s.addr = <-addrCh:
	case <-s.exited:
		t.Fatalf("server exited before listening:\n%s", s.logText())
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not listen within 30s:\n%s", s.logText())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + s.addr + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready within 30s:\n%s", s.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) logText() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// kill SIGKILLs the server, as a crash would, and waits for it to exit.
func (s *server) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// newBrowser starts headless Chromium (exe) with a window of w x h and
// returns its tab's context, which ends after d or with the test.
func newBrowser(t *testing.T, exe string, d time.Duration, w, h int) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(w, h),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	return bctx
}
