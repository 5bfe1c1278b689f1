package testbin

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// Program returns the path of the first of names on PATH, a program from
// the Debian package pkg. Without it the test is skipped with a message
// naming the package, except under CI=true, where it fails: .ci/run
// installs what is missing.
func Program(t testing.TB, pkg string, names ...string) string {
	t.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; .ci/run installs Debian's %s package", names[0], pkg)
	}
	t.Skipf("%s is not installed (apt-get install %s); CI runs this test", names[0], pkg)
	return ""
}

// Buffer is a bytes.Buffer that a process writes while a test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
