package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/knadh/koanf/providers/file"

	"github.com/agent-server/agent-server/core/config"
)

// reloadDebounce folds the several filesystem events one save makes (truncate,
// write, rename) into one reload.
const reloadDebounce = 150 * time.Millisecond

// applier takes a new, already validated configuration: the plugin host
// swaps its keys and plugin configs and empties its decision cache.
type applier interface {
	Reload(ctx context.Context, cfg config.Config) error
}

// revalidator closes open sockets whose credential the new configuration no
// longer accepts (auth.revalidate_on_reload).
type revalidator interface {
	Revalidate(ctx context.Context) int
}

// reloader reloads the configuration when its file changes (watched through
// koanf's file provider) or on SIGHUP. An invalid change is logged, naming
// the key at fault, and the running configuration stays.
type reloader struct {
	log        *slog.Logger
	load       func() (config.Config, error) // reads file, environment and flags again
	keys       func(config.Config) ([]string, error)
	apply      applier
	revalidate revalidator    // nil when nothing can be revalidated
	metrics    *reloadMetrics // nil counts nothing

	mu      sync.Mutex // serialises reloads; guards current
	current config.Config
}

// run watches path and SIGHUP until ctx ends.
func (r *reloader) run(ctx context.Context, path string) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	var stopWatch func()
	if path != "" {
		stopWatch = r.watch(ctx, path, poke)
		defer func() { stopWatch() }()
	}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.log.Info("SIGHUP: reloading config")
			r.reload(ctx)
		case <-changed:
			timer = time.After(reloadDebounce)
		case <-timer:
			timer = nil
			r.log.Info("config file changed: reloading", "file", path)
			r.reload(ctx)
		}
	}
}

// watch follows path with koanf's file provider. Editors that replace the
// file end the watch, so it is set up again while ctx lasts.
func (r *reloader) watch(ctx context.Context, path string, poke func()) (stop func()) {
	var mu sync.Mutex
	var fp *file.File
	var arm func()
	arm = func() {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		fp = file.Provider(path)
		err := fp.Watch(func(_ any, err error) {
			poke()
			if err != nil { // the watch has ended (file removed or replaced)
				time.AfterFunc(reloadDebounce, arm)
			}
		})
		if err != nil {
			r.log.Warn("cannot watch config file; SIGHUP still reloads", "file", path, "error", err)
			time.AfterFunc(time.Second, arm)
		}
	}
	arm()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if fp != nil {
			_ = fp.Unwatch()
		}
	}
}

// reload loads, validates and applies the configuration once.
func (r *reloader) reload(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, err := r.load()
	if err != nil {
		r.metrics.reloaded(reloadRejected)
		r.log.Error("config reload rejected; keeping the running config", "error", err)
		return
	}
	keys, err := r.keys(cfg)
	if err != nil {
		r.metrics.reloaded(reloadRejected)
		r.log.Error("config reload rejected; keeping the running config", "error", err)
		return
	}
	cfg.Auth.Keys = keys
	if reflect.DeepEqual(cfg, r.current) {
		r.metrics.reloaded(reloadUnchanged)
		r.log.Info("config unchanged")
		return
	}
	if fixed := restartOnly(r.current, cfg); len(fixed) > 0 {
		r.log.Warn("config keys changed that apply only after a restart", "keys", fixed)
	}
	if err := r.apply.Reload(ctx, cfg); err != nil {
		r.metrics.reloaded(reloadRejected)
		r.log.Error("config reload rejected; keeping the running config", "error", err)
		return
	}
	r.metrics.reloaded(reloadApplied)
	r.current = cfg
	r.log.Info("config reloaded", "keys", len(keys))
	if cfg.Auth.RevalidateOnReload && r.revalidate != nil {
		n := r.revalidate.Revalidate(ctx)
		r.log.Info("open sockets revalidated", "closed", n)
	}
}

// liveKeys are the keys a reload applies: the session and runtime keys,
// each running plugin's config (sent again with Configure), and whether
// to revalidate open sockets, which the reloader reads itself.
// plugins.instances is left to the plugin host: it refuses a changed path,
// pin or process count of a running plugin, and a plugin no chain lists
// does not run.
var liveKeys = map[string]bool{
	"auth.keys":                 true,
	"auth.runtime_keys":         true,
	"auth.revalidate_on_reload": true,
	"plugins.instances":         true,
}

// restartOnly names, by their config keys, the values that differ between
// a and b and that a reload does not apply: they take effect at the next
// start.
func restartOnly(a, b config.Config) []string { return config.ChangedKeys(a, b, liveKeys) }
