package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agent-server/agent-server/core/auditlog"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/server"
)

// adminListener is the admin listener (admin.addr): metrics, health and,
// with admin.pprof, profiles, on a port of their own. The zero value (the
// listener off) does nothing.
type adminListener struct {
	ln  net.Listener
	srv *http.Server
}

// listenAdmin binds admin.addr; a failed bind stops start-up with an error
// naming the key. An empty admin.addr binds nothing.
func listenAdmin(c config.Admin, srv *server.Server, reg *prometheus.Registry, log *slog.Logger) (*adminListener, error) {
	if c.Addr == "" {
		return &adminListener{}, nil
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin.addr: listen on %s: %w", c.Addr, err)
	}
	var metrics http.Handler
	if reg != nil {
		metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelError),
			EnableOpenMetrics: true,
		})
	}
	return &adminListener{ln: ln, srv: &http.Server{
		Handler:           srv.AdminHandler(metrics, c.Pprof),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}, nil
}

// serve logs the chosen address and serves in the background.
func (a *adminListener) serve(log *slog.Logger) {
	if a.ln == nil {
		return
	}
	log.Info("admin listening", "addr", a.ln.Addr().String())
	go func() {
		if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", "err", err)
		}
	}()
}

// shutdown stops the admin listener within ctx.
func (a *adminListener) shutdown(ctx context.Context) {
	if a.srv != nil {
		_ = a.srv.Shutdown(ctx)
	}
}

// Close closes the listener if shutdown has not (an early return, maybe
// before serve).
func (a *adminListener) Close() error {
	if a.srv == nil {
		return nil
	}
	err := a.srv.Close()
	_ = a.ln.Close() // not the server's yet when serve never ran
	return err
}

// gatherer is reg as the operations view reads it; nil when metrics are off.
func gatherer(reg *prometheus.Registry) prometheus.Gatherer {
	if reg == nil {
		return nil
	}
	return reg
}

// pluginStatuses turns the host's Health into the operations view's rows.
func pluginStatuses(hs []plugins.Health) []server.PluginStatus {
	out := make([]server.PluginStatus, len(hs))
	for i, h := range hs {
		out[i] = server.PluginStatus{Name: h.Name, State: string(h.State), Version: h.Version, PID: h.PID, Restarts: h.Restarts, LastError: h.LastError,
			Processes: len(h.Processes), ProcessesUp: h.Up()}
	}
	return out
}

// reopenOnHangup reopens the audit file on every SIGHUP until ctx ends, so
// that a log rotation (rename, then SIGHUP) loses no line: the records
// accepted before the signal go to the old file, the later ones to the new.
func reopenOnHangup(ctx context.Context, f *auditlog.File, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			rctx, cancel := context.WithTimeout(ctx, logFlushTimeout)
			err := f.Reopen(rctx)
			cancel()
			if err != nil {
				log.Error("SIGHUP: cannot reopen the audit log; writing to the old file", "err", err)
				continue
			}
			log.Info("SIGHUP: audit log reopened")
		}
	}
}

// flushTracing sends the spans still buffered, within a few seconds.
func flushTracing(stop func(context.Context) error, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		log.Warn("tracing: flush at exit", "err", err)
	}
}
