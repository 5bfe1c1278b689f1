package plugins

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// pluginStderr is the plugin process's real stderr, captured before
// go-plugin's Serve swaps os.Stderr for a pipe. The host reads it and turns
// each JSON line into a record in its own log.
var pluginStderr io.Writer = os.Stderr

// Logger returns a logger for use inside a plugin process. Its records reach
// the server's log with the attribute plugin=<name>. Never log a credential.
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(pluginStderr, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.Attr{} // the host stamps its own time
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}

// newPluginHCLogger is go-plugin's own logger inside a plugin process.
func newPluginHCLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Output:     pluginStderr,
		JSONFormat: true,
		Level:      hclog.Info,
	})
}

// slogHCLogger adapts the server's *slog.Logger to the hclog.Logger that
// go-plugin logs through, both for its own messages and for each line a
// plugin writes to stderr.
type slogHCLogger struct {
	log   *slog.Logger
	name  string
	args  []any
	level hclog.Level
}

func newSlogHCLogger(l *slog.Logger, level hclog.Level) *slogHCLogger {
	return &slogHCLogger{log: l, level: level}
}

// Log maps the hclog level to slog and writes one record.
func (l *slogHCLogger) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || level < l.level {
		return
	}
	var sl slog.Level
	switch {
	case level <= hclog.Debug:
		sl = slog.LevelDebug
	case level == hclog.Info:
		sl = slog.LevelInfo
	case level == hclog.Warn:
		sl = slog.LevelWarn
	default:
		sl = slog.LevelError
	}
	ctx := context.Background()
	if !l.log.Enabled(ctx, sl) {
		return
	}
	attrs := make([]any, 0, len(l.args)+len(args)+2)
	if l.name != "" {
		attrs = append(attrs, slog.String("source", l.name))
	}
	attrs = append(attrs, l.args...)
	attrs = append(attrs, normalizeArgs(args)...)
	l.log.Log(ctx, sl, msg, attrs...)
}

// normalizeArgs makes hclog key/value pairs safe for slog: keys become
// strings and a dangling key gets a placeholder value.
func normalizeArgs(args []any) []any {
	out := make([]any, 0, len(args))
	for i := 0; i < len(args); i += 2 {
		key := fmt.Sprint(args[i])
		if key == "plugin" {
			key = "plugin_binary" // "plugin" is the instance name, set by the host
		}
		if i+1 >= len(args) {
			out = append(out, slog.String("!BADKEY", key))
			break
		}
		v := args[i+1]
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		out = append(out, slog.Any(key, v))
	}
	return out
}

func (l *slogHCLogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l *slogHCLogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l *slogHCLogger) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l *slogHCLogger) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l *slogHCLogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l *slogHCLogger) IsTrace() bool { return l.level <= hclog.Trace }
func (l *slogHCLogger) IsDebug() bool { return l.level <= hclog.Debug }
func (l *slogHCLogger) IsInfo() bool  { return l.level <= hclog.Info }
func (l *slogHCLogger) IsWarn() bool  { return l.level <= hclog.Warn }
func (l *slogHCLogger) IsError() bool { return l.level <= hclog.Error }

func (l *slogHCLogger) ImpliedArgs() []any { return l.args }

func (l *slogHCLogger) With(args ...any) hclog.Logger {
	c := *l
	c.args = append(append([]any(nil), l.args...), normalizeArgs(args)...)
	return &c
}

func (l *slogHCLogger) Name() string { return l.name }

func (l *slogHCLogger) Named(name string) hclog.Logger {
	c := *l
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (l *slogHCLogger) ResetNamed(name string) hclog.Logger {
	c := *l
	c.name = name
	return &c
}

func (l *slogHCLogger) SetLevel(level hclog.Level) { l.level = level }
func (l *slogHCLogger) GetLevel() hclog.Level      { return l.level }

func (l *slogHCLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

func (l *slogHCLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		l.Info(strings.TrimRight(string(p), "\n"))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var _ hclog.Logger = (*slogHCLogger)(nil)

// lineLogger turns a byte stream into one log record per line. go-plugin
// streams a plugin's os.Stdout and os.Stderr (after Serve) through it.
type lineLogger struct {
	mu    sync.Mutex
	log   *slog.Logger
	level slog.Level
	msg   string
	buf   []byte
}

// maxLogLine bounds one buffered line so a plugin cannot grow host memory.
const maxLogLine = 16 << 10

// Write logs every complete line in p and buffers the rest.
func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > maxLogLine {
				w.emit(w.buf)
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

func (w *lineLogger) emit(line []byte) {
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	w.log.Log(context.Background(), w.level, w.msg, slog.String("line", string(line)))
}
