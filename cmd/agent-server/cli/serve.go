package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/auditlog"
	"github.com/agent-server/agent-server/core/boltstore"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/linewriter"
	"github.com/agent-server/agent-server/core/memstore"
	"github.com/agent-server/agent-server/core/pgstore"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/server"
)

// serve wires config -> keys -> plugin host -> store -> actors -> server and
// runs until SIGINT or SIGTERM, then shuts down within
// server.shutdown_timeout.
//
// Everything serve writes to stderr (the log, the access log, the audit
// log's stderr sink, a generated key) goes through one line writer, so
// that a busy server's lines go out many to a write and keep their order.
// It is flushed before serve returns, on every path, so every accepted line
// is out before Main writes its own and the process exits.
func serve(args []string, stderr io.Writer) (err error) {
	f, err := parseFlags("serve", args, true)
	if err != nil {
		return err
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	out := linewriter.New(stderr, linewriter.DefaultLimit)
	defer func() { err = errors.Join(err, closeLines(out)) }()
	log := newLogger(cfg.Log, out)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, cfg, f, log, out)
}

// run is serve after flag and config handling; f reloads the config and
// stderr takes every line for stderr.
//
// Whatever run starts it releases on every return, a failed start
// included, in the reverse order of the start (see releases): the server,
// then the admin listener (which answers /ready and /metrics while the
// server drains), the actors, the store (after the actors' writer has
// committed everything), the plugins, the audit file and tracing. The
// server, the admin listener and the actors share one
// server.shutdown_timeout. The server is shut down once, by its release
// step, and that shutdown's error is run's: Serve's context does not end
// with run's, or Serve would shut the server down on its own, under a
// deadline of its own, with an error nobody read.
func run(ctx context.Context, cfg config.Config, f configFlags, log *slog.Logger, stderr *linewriter.Writer) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	var started releases
	serving := false
	defer func() {
		// First end the goroutines run starts (reload, audit reopen,
		// memory release), so that none works on what is released below.
		cancel()
		sctx, stop := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
		defer stop()
		if rerr := started.release(sctx); rerr != nil {
			err = errors.Join(err, fmt.Errorf("shutdown: %w", rerr))
			return
		}
		if serving {
			log.Info("stopped")
		}
	}()

	keys, err := sessionKeys(cfg, os.Getenv, stderr)
	if err != nil {
		return err
	}
	gc, from := server.SetGCPercent(cfg.Server.GCPercent, os.Getenv)
	log.Debug("garbage collector target", "percent", gc, "from", from)
	generated := len(cfg.Auth.Keys) == 0 && len(keys) == 1 && !cfg.Auth.Disabled
	cfg.Auth.Keys = keys

	reg := newRegistry(cfg.Metrics.Enabled)
	var metrics prometheus.Registerer // nil, not a typed nil, when metrics are off
	if reg != nil {
		metrics = reg
	}
	tracing, stopTracing, err := startTracing(ctx, cfg.Tracing.Enabled, os.Getenv)
	if err != nil {
		return err
	}
	started.add("tracing", func(context.Context) error { flushTracing(stopTracing, log); return nil })
	// The audit log's stderr sink shares the log's line writer, so that its
	// records and the access lines batch together and keep their order.
	audit, auditFile, err := auditlog.Open(cfg.Audit.Sink, stderr.Source())
	if err != nil {
		return err
	}
	registerAuditLoss(metrics, audit)
	if auditFile != nil {
		started.add("audit file", func(context.Context) error {
			closeAuditFile(auditFile, log.With("component", "audit"))
			return nil
		})
		go reopenOnHangup(ctx, auditFile, log.With("component", "audit"))
	}

	var chains actors.Chains
	var ready []server.ReadyCheck
	var host *plugins.Host
	var pluginStatus func() []server.PluginStatus
	if cfg.Auth.Disabled {
		log.Warn("authentication is DISABLED (auth.disabled: true): every request is allowed")
		if chains, err = disabledChains(); err != nil {
			return err
		}
	} else {
		host = plugins.NewHost(cfg, log.With("component", "plugins"), plugins.WithMetrics(metrics), plugins.WithTracerProvider(tracing))
		// Also when Start fails: it may have started some processes.
		// The plugins stop after the actors: in-flight handshakes need them.
		started.add("plugins", func(context.Context) error { return host.Close() })
		if err := host.Start(ctx); err != nil {
			return fmt.Errorf("start auth plugins: %w", err)
		}
		chains = hostChains{host}
		ready = append(ready, server.ReadyCheck{Component: "plugins", Check: func(context.Context) error { return host.Ready() }, Status: host.Status})
		pluginStatus = func() []server.PluginStatus { return pluginStatuses(host.Health()) }
	}

	store, err := openStore(cfg.Storage, log.With("component", "storage"))
	if err != nil {
		return err
	}
	if c, ok := store.(io.Closer); ok {
		started.add("store", func(context.Context) error { return c.Close() })
	}
	if r, ok := store.(readier); ok {
		ready = append(ready, server.ReadyCheck{Component: "store", Check: r.Ready})
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	sys, err := actors.New(actors.Options{Store: store, Chains: chains, Logger: log.With("component", "actors"), Limits: cfg.Limits,
		Conversations: cfg.Conversations, Cluster: cfg.Cluster, Metrics: metrics, StoreDriver: cfg.Storage.Driver, Audit: audit})
	if err != nil {
		return fmt.Errorf("start actors: %w", err)
	}
	// The server's shutdown shuts the actors down and reports how; this
	// step does it only when run returns before the server was built.
	serverShut := false
	started.add("actors", func(ctx context.Context) error {
		if serverShut {
			return nil
		}
		return sys.Shutdown(ctx)
	})
	var nodes func() []server.NodeStatus
	if cfg.Cluster.Enabled {
		ready = append(ready, server.ReadyCheck{Component: "cluster", Check: sys.ClusterReady})
		nodes = func() []server.NodeStatus {
			t, _ := sys.Topology()
			out := make([]server.NodeStatus, 0, len(t.Members))
			for _, m := range t.Members {
				out = append(out, server.NodeStatus{ID: m.ID, Address: m.Address, Self: m.Address == t.Self})
			}
			return out
		}
	}
	srv, err := server.New(server.Options{
		Config:    cfg,
		Actors:    sys,
		Store:     store,
		Ready:     ready,
		Logger:    log.With("component", "server"),
		AccessLog: log.With("component", "access"),
		Version:   Version,
		Metrics:   metrics,
		Gatherer:  gatherer(reg),
		Tracing:   tracing,
		Plugins:   pluginStatus,
		Nodes:     nodes,
	})
	if err != nil {
		return fmt.Errorf("build server: %w", err)
	}
	// The admin listener is released after the server (added before it),
	// so that /ready and /metrics answer while the server drains.
	var admin *adminListener
	started.add("admin listener", func(ctx context.Context) error {
		if admin != nil {
			admin.shutdown(ctx)
			_ = admin.Close() // what shutdown left when ctx ended, or the listener serve never took
		}
		return nil
	})
	// Serve's result, until the select below has read it; nil while Serve
	// has not started. Serve ends when the release has shut the server
	// down (or, racing it, finds it shut down: no error of its own).
	var served chan error
	serveCtx, endServe := context.WithCancel(context.WithoutCancel(ctx))
	started.add("server", func(ctx context.Context) error {
		serverShut = true
		err := srv.Shutdown(ctx)
		endServe()
		if served != nil {
			if serr := <-served; serr != nil && !errors.Is(serr, server.ErrClosed) {
				err = errors.Join(err, fmt.Errorf("serve: %w", serr))
			}
		}
		return err
	})
	if admin, err = listenAdmin(cfg.Admin, srv, reg, log); err != nil {
		return err
	}
	ln, err := server.Listen(ctx, cfg.Server.Addr)
	if err != nil {
		return err
	}
	log.Info("listening", "addr", ln.Addr().String(), "version", Version, "tls", cfg.Server.TLS.CertFile != "")
	admin.serve(log)
	serving = true

	if host != nil {
		r := &reloader{
			log:     log.With("component", "reload"),
			load:    f.load,
			apply:   host,
			current: cfg,
			metrics: newReloadMetrics(metrics),
			keys: func(c config.Config) ([]string, error) {
				ks, err := sessionKeys(c, os.Getenv, io.Discard)
				if err == nil && generated && len(c.Auth.Keys) == 0 {
					envKeys, _ := core.KeysFromEnv(os.Getenv)
					if len(envKeys) == 0 {
						ks = keys // still no configured key: keep the one printed at start
					}
				}
				return ks, err
			},
		}
		if rv, ok := any(sys).(revalidator); ok {
			r.revalidate = rv
		}
		go r.run(ctx, f.path())
	}

	go srv.ReleaseMemory(ctx)
	served = make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, ln) }()
	var leaving error
	select {
	case err := <-served:
		served = nil // read: the release does not wait for it
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	case <-ctx.Done():
	case <-sys.Left():
		// The other members dropped this node, and protoactor never lets a
		// dropped member back in: restart as a new one. Clients reconnect
		// on 1012, to another node through the balancer.
		sys.CloseWith(core.DisconnectRestart)
		leaving = errLeft
	}
	log.Info("shutting down", "timeout", cfg.Server.ShutdownTimeout.String())
	return leaving
}

// releases is what run has started, each with how to release it.
type releases []releaseStep

// releaseStep releases one thing run started; what names it in an error.
type releaseStep struct {
	what string
	stop func(ctx context.Context) error
}

// add records that what was started and is released by stop.
func (r *releases) add(what string, stop func(ctx context.Context) error) {
	*r = append(*r, releaseStep{what: what, stop: stop})
}

// release releases everything in the reverse order it was added, each
// even when one before it failed, and joins their errors.
func (r releases) release(ctx context.Context) error {
	var errs []error
	for i := len(r) - 1; i >= 0; i-- {
		if err := r[i].stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r[i].what, err))
		}
	}
	return errors.Join(errs...)
}

// errLeft is serve's error when this node left the cluster to restart as a
// new member; the process exits with exitRestart so that its supervisor
// starts it again.
var errLeft = errors.New("this node left the cluster (the other members dropped it); exiting so that it restarts as a new member")

// openStore returns the event store storage.driver names. run closes it
// after the actors stop; a crash loses nothing either, since every commit is
// synced before it is acknowledged. A postgres store returns at once and
// reaches its database in the background (its Ready says when).
func openStore(c config.Storage, log *slog.Logger) (core.Store, error) {
	switch c.Driver {
	case config.DriverBolt:
		s, err := boltstore.Open(c.Path, boltstore.Options{})
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		return s, nil
	case config.DriverPostgres:
		s, err := pgstore.Open(c.Postgres.DSN, log)
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		return s, nil
	case config.DriverMemory:
		return memstore.New(), nil
	}
	return nil, fmt.Errorf("storage.driver: unknown driver %q", c.Driver)
}

// readier is a store that can say whether it is reachable (pgstore).
type readier interface {
	Ready(ctx context.Context) error
}

// hostChains adapts the plugin host to actors.Chains: a route without a
// chain yields nil, which the supervisor treats as an error (fail closed).
type hostChains struct{ h *plugins.Host }

// Chain returns the host's chain for route, or nil.
func (c hostChains) Chain(route core.Route) *core.Chain {
	ch, err := c.h.Chain(route)
	if err != nil {
		return nil
	}
	return ch
}
