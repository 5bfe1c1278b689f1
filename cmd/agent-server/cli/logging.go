package cli

import (
	"io"
	"log/slog"

	"github.com/agent-server/agent-server/core/config"
)

// newLogger builds the server's structured logger from log.level and
// log.format.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
