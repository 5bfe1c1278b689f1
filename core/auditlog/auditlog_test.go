package auditlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/linewriter"
)

// Records from many goroutines come out as whole JSON lines.
func TestWriterLines(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			w.Audit(&core.AuditRecord{Event: core.AuditRequest, Plugin: "header", Reason: strings.Repeat("x", i)})
		})
	}
	wg.Wait()
	lines := 0
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var rec core.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %q is not a record: %v", sc.Text(), err)
		}
		lines++
	}
	if lines != 50 {
		t.Errorf("got %d lines, want 50", lines)
	}
}

// A rotated file is reopened under its name; no line is lost.
func TestFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	sink, f, err := Open("file:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink.Audit(&core.AuditRecord{RequestID: "one"})
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	sink.Audit(&core.AuditRecord{RequestID: "two"}) // still the renamed file
	if err := f.Reopen(context.Background()); err != nil {
		t.Fatal(err)
	}
	sink.Audit(&core.AuditRecord{RequestID: "three"})
	if err := f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	sink.Audit(&core.AuditRecord{RequestID: "late"}) // dropped, and counted once
	if got := f.Failed(); got != 1 {
		t.Errorf("Failed after a record written once closed = %d, want 1", got)
	}
	if err := os.Rename(path, path+".2"); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(context.Background()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Reopen after Close = %v, want os.ErrClosed", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reopen after Close created %s (%v): a file nobody closes", path, err)
	}
	if err := os.Rename(path+".2", path); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	old, cur := read(path+".1"), read(path)
	if !strings.Contains(old, `"one"`) || !strings.Contains(old, `"two"`) || strings.Contains(old, `"three"`) {
		t.Errorf("rotated file = %q", old)
	}
	if !strings.Contains(cur, `"three"`) || strings.Count(cur, "\n") != 1 {
		t.Errorf("new file = %q", cur)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
}

func TestOpen(t *testing.T) {
	if s, f, err := Open("off", nil); s != nil || f != nil || err != nil {
		t.Errorf("off = %v %v %v, want nothing", s, f, err)
	}
	var buf bytes.Buffer
	s, f, err := Open("stderr", &buf)
	if err != nil || f != nil {
		t.Fatal(err)
	}
	s.Audit(&core.AuditRecord{Plugin: "x"})
	if !strings.Contains(buf.String(), `"plugin":"x"`) {
		t.Errorf("stderr sink wrote %q", buf.String())
	}
	if _, _, err := Open("file:"+filepath.Join(t.TempDir(), "no", "such", "dir", "a.log"), nil); err == nil || !strings.Contains(err.Error(), "audit.sink") {
		t.Errorf("err = %v, want one naming audit.sink", err)
	}
}

// failing is a writer that fails every Write.
type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// Failed counts every record that did not reach the output, whether the
// writer refused it at once or took it and lost it in a failed batch, and
// only the audit log's own when it shares a line writer with the log.
func TestFailedCountsLostRecords(t *testing.T) {
	tests := []struct {
		name string
		out  func(t *testing.T) (w io.Writer, flush func())
		want int64
	}{
		{"written", func(*testing.T) (io.Writer, func()) { return io.Discard, func() {} }, 0},
		{"refused by the writer", func(*testing.T) (io.Writer, func()) { return failing{}, func() {} }, 3},
		{"accepted, then lost", func(t *testing.T) (io.Writer, func()) {
			lw := linewriter.New(failing{}, 0)
			return lw, func() { closeLines(t, lw) }
		}, 3},
		{"shared with the log, then lost", func(t *testing.T) (io.Writer, func()) {
			lw := linewriter.New(failing{}, 0)
			for range 2 {
				_, _ = lw.Write([]byte("level=INFO msg=access\n"))
			}
			return lw.Source(), func() {
				closeLines(t, lw)
				if got := lw.Failed(); got != 5 {
					t.Errorf("the line writer lost %d lines, want 5 (2 log lines, 3 records)", got)
				}
			}
		}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, flush := tt.out(t)
			s := NewWriter(out)
			for range 3 {
				s.Audit(&core.AuditRecord{Event: core.AuditHandshake, Plugin: "jwt"})
			}
			flush()
			if got := s.Failed(); got != tt.want {
				t.Errorf("Failed = %d, want %d", got, tt.want)
			}
		})
	}
}

func closeLines(t *testing.T, lw *linewriter.Writer) {
	t.Helper()
	if err := lw.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
