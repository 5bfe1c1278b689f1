// Package auditlog holds the audit log's sinks: each writes one JSON line
// per core.AuditRecord. Open builds the one audit.sink names: stderr, a
// file (reopened on Reopen, for log rotation) or nothing.
package auditlog

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// Writer writes each record as one JSON line to an io.Writer, in one Write
// call, so that lines never interleave.
type Writer struct {
	mu     sync.Mutex
	w      io.Writer
	failed atomic.Int64
}

// NewWriter returns a sink writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Audit writes rec as one line. A record that cannot be written is counted
// (Failed) and dropped: the request it describes has been decided already.
func (s *Writer) Audit(rec *core.AuditRecord) {
	line, err := json.Marshal(rec)
	if err != nil {
		s.failed.Add(1)
		return
	}
	line = append(line, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.w.Write(line); err != nil {
		s.failed.Add(1)
	}
}

// Failed returns how many records could not be written.
func (s *Writer) Failed() int64 { return s.failed.Load() }

// File is a Writer on a file opened for appending, which Reopen opens again
// under the same name: a rotation tool renames the file, then has the
// server reopen it (SIGHUP), and no line is lost or split.
type File struct {
	*Writer
	path string
	f    *os.File // guarded by Writer.mu
}

// OpenFile opens (creating it if needed, mode 0600) path for appending.
func OpenFile(path string) (*File, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{Writer: NewWriter(f), path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return f, nil
}

// Reopen opens the file's path again and writes there from now on. When
// the path cannot be opened the old file is kept and the error returned.
func (s *File) Reopen() error {
	f, err := openAppend(s.path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.f
	s.f, s.w = f, f
	s.mu.Unlock()
	return old.Close()
}

// Close closes the file; records after it are dropped and counted.
func (s *File) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}

// Open returns the sink audit.sink names (already validated by config):
// stderr writes to stderr, file:PATH to a File, off to nothing (nil). The
// File is also returned, for the caller to reopen and close; it is nil for
// the other sinks.
func Open(sink string, stderr io.Writer) (core.AuditSink, *File, error) {
	switch {
	case sink == config.AuditOff:
		return nil, nil, nil
	case sink == config.AuditStderr:
		return NewWriter(stderr), nil, nil
	case strings.HasPrefix(sink, config.AuditFilePrefix):
		f, err := OpenFile(strings.TrimPrefix(sink, config.AuditFilePrefix))
		if err != nil {
			return nil, nil, fmt.Errorf("audit.sink: %w", err)
		}
		return f, f, nil
	}
	return nil, nil, fmt.Errorf("audit.sink: want stderr, off or file:PATH, got %q", sink)
}

var (
	_ core.AuditSink = (*Writer)(nil)
	_ core.AuditSink = (*File)(nil)
)
