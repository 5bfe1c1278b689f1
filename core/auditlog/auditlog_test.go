package auditlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agent-server/agent-server/core"
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
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	sink.Audit(&core.AuditRecord{RequestID: "three"})
	if err := f.Close(); err != nil {
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
