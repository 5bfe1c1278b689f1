package cli

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/boltstore"
	"github.com/agent-server/agent-server/tests/testbin"
)

// slowStderr holds its first Write for 300 ms, as a slow reader of stderr
// would, and takes the others at once: a log line still pending in the
// server's line writer when serve returns would reach it after Main's
// error, or not at all.
type slowStderr struct {
	testbin.Buffer
	started atomic.Bool
}

func (s *slowStderr) Write(p []byte) (int, error) {
	if s.started.CompareAndSwap(false, true) {
		time.Sleep(300 * time.Millisecond)
	}
	return s.Buffer.Write(p)
}

// When serve fails after it has logged, every log line is out before Main
// writes the error and returns: serve flushes its line writer on the way
// out.
func TestServeWritesItsLogBeforeMainsError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("auth:\n  disabled: true\nstorage:\n  driver: memory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string // Main's error line
	}{
		{"server.addr taken", []string{"--addr", taken.Addr().String(), "--admin-addr", ""}, "agent-server: listen on " + taken.Addr().String()},
		{"admin.addr taken", []string{"--addr", "127.0.0.1:0", "--admin-addr", taken.Addr().String()}, "agent-server: admin.addr: listen on " + taken.Addr().String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stderr := &slowStderr{}
			if code := Main(append([]string{"serve", "--config", path}, tt.args...), io.Discard, stderr); code != exitError {
				t.Fatalf("exit code %d, want %d\n%s", code, exitError, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(lines) < 2 || !strings.Contains(lines[0], "authentication is DISABLED") || !strings.HasPrefix(lines[len(lines)-1], tt.want) {
				t.Errorf("stderr = %q, want the log's lines (the first warning that auth is disabled), then %q", lines, tt.want)
			}
		})
	}
}

// When start-up fails after the actors, the store and the audit file were
// started (here: server.addr is taken), serve releases them before it
// returns: no goroutine of the actors is left, and the store's file lock is
// free, so that a caller (a test, a supervisor restarting in-process) can
// start again. Before, the early return left the actor system running.
func TestServeReleasesWhatItStartedOnAFailedStart(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	cfg := "auth:\n  disabled: true\nstorage:\n  driver: bolt\n  path: events.db\naudit:\n  sink: file:audit.log\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &testbin.Buffer{}
	if code := Main([]string{"serve", "--config", path, "--addr", taken.Addr().String(), "--admin-addr", ""}, io.Discard, stderr); code != exitError {
		t.Fatalf("exit code %d, want %d\n%s", code, exitError, stderr)
	}
	// The actors' goroutines end with their shutdown, which Main has
	// waited for; a moment is allowed for the last of them to return.
	var left []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if left = goroutinesIn("/agent-server/actors.", "asynkron/protoactor-go"); len(left) == 0 {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("%d goroutines of the actor system outlive serve; the first:\n%s", len(left), left[0])
	}
	s, err := boltstore.Open(filepath.Join(dir, "events.db"), boltstore.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("the store is still open after serve returned: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// goroutinesIn returns the stacks of the goroutines that run a function
// whose name contains one of parts.
func goroutinesIn(parts ...string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		for _, p := range parts {
			if strings.Contains(g, p) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
