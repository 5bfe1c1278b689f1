package cli

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
