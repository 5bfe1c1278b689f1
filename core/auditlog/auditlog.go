// Package auditlog holds the audit log's sinks: each writes one JSON line
// per core.AuditRecord. Open builds the one audit.sink names: stderr, a
// file (reopened on Reopen, for log rotation) or nothing. The file sink
// writes through a linewriter.Writer, and the server hands the stderr sink
// the line writer it logs through: a busy server's records go out many to
// a write (see linewriter for what a crash can lose).
package auditlog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/linewriter"
)

// Writer writes each record as one JSON line to an io.Writer, in one Write
// call, so that lines never interleave.
type Writer struct {
	mu     sync.Mutex
	w      io.Writer
	failed atomic.Int64
}

// lossCounter is a writer that takes a line at once and writes it later (a
// linewriter.Writer or Source), counting the lines it then fails to write.
type lossCounter interface {
	Failed() int64
}

// NewWriter returns a sink writing to w. When w writes later (a
// linewriter.Writer or Source), the records it fails to write count in
// Failed too.
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

// Failed returns how many records could not be written: refused by the
// writer, or accepted and then lost to a write error.
func (s *Writer) Failed() int64 {
	n := s.failed.Load()
	if lc, ok := s.w.(lossCounter); ok {
		n += lc.Failed()
	}
	return n
}

// File is a Writer on a file opened for appending, through a
// linewriter.Writer of its own (records go out many to a write). Reopen
// opens the file again under the same name: a rotation tool renames the
// file, then has the server reopen it (SIGHUP), and no line is lost or
// split.
type File struct {
	*Writer
	path  string
	lines *linewriter.Writer

	mu     sync.Mutex // orders Reopen and Close
	f      *os.File
	closed bool // Close has begun: Reopen opens nothing more
}

// OpenFile opens (creating it if needed, mode 0600) path for appending.
// Close it to write the records still pending.
func OpenFile(path string) (*File, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	lines := linewriter.New(f, linewriter.DefaultLimit)
	return &File{Writer: NewWriter(lines), path: path, lines: lines, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return f, nil
}

// Reopen opens the file's path again and writes there from now on, after
// writing the records accepted before the call to the old file. When the
// path cannot be opened, or the old file does not take its records before
// ctx ends, the old file is kept and the error returned.
func (s *File) Reopen(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("audit log: reopen %s: %w", s.path, os.ErrClosed)
	}
	f, err := openAppend(s.path)
	if err != nil {
		return err
	}
	if err := s.lines.SetOutput(ctx, f); err != nil {
		_ = f.Close()
		return fmt.Errorf("audit log: reopen %s: %w", s.path, err)
	}
	old := s.f
	s.f = f
	if err := old.Close(); err != nil {
		return fmt.Errorf("audit log: close the old file: %w", err)
	}
	return nil
}

// Close writes the records still pending, within ctx, and closes the file;
// records after it are dropped and counted.
func (s *File) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true // a SIGHUP from now on opens no file that nobody closes
	s.mu.Unlock()
	if err := s.lines.Close(ctx); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// Open returns the sink audit.sink names (already validated by config):
// stderr writes to stderr (the server passes a linewriter.Source, to share
// its log's writer), file:PATH to a File, off to nothing (nil). The
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
