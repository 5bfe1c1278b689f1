package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/agent-server/agent-server/core/auditlog"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/linewriter"
)

// newLogger builds the server's structured logger from log.level and
// log.format. A line logged with the context of a traced request carries
// its trace_id and span_id.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(traceHandler{slog.NewJSONHandler(w, opts)})
	}
	return slog.New(traceHandler{slog.NewTextHandler(w, opts)})
}

// traceHandler adds the trace and span IDs of the record's context.
type traceHandler struct{ slog.Handler }

// Handle adds trace_id and span_id when ctx holds a valid span.
func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs keeps the trace handler around the new handler.
func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

// WithGroup keeps the trace handler around the new handler.
func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// logFlushTimeout bounds the wait for a log's pending lines at a reopen and
// at exit: a stuck disk or a stuck reader of stderr must not hold either
// forever.
const logFlushTimeout = 5 * time.Second

// closeAuditFile writes the audit records still pending and closes the
// file, within logFlushTimeout.
func closeAuditFile(f *auditlog.File, log *slog.Logger) {
	if err := closeWithin(f.Close); err != nil {
		log.Error("records may be lost at exit", "err", err)
	}
}

// closeLines writes the lines still pending for stderr, within
// logFlushTimeout; what is written after goes straight to stderr.
func closeLines(w *linewriter.Writer) error {
	if err := closeWithin(w.Close); err != nil {
		return fmt.Errorf("write the log at exit: %w", err)
	}
	return nil
}

// closeWithin runs close with a context that ends after logFlushTimeout.
func closeWithin(close func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), logFlushTimeout)
	defer cancel()
	return close(ctx)
}
