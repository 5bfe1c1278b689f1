package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/agent-server/agent-server/core/config"
)

// Description is what `agent-server plugins list` prints for one plugin.
type Description struct {
	Name      string // the instance name chains use
	Path      string // the binary
	SHA256    string // the binary's actual hash, lower-case hex
	Pinned    bool   // whether plugins.instances.<name>.sha256 is set (and matched)
	Version   string // from the plugin's Info
	Inputs    Inputs // from the plugin's Info
	WantsKeys bool   // from the plugin's Info
	Err       error  // why this plugin could not be described; nil if it could
}

// Describe reports what cfg would load: for every plugin a chain uses, its
// binary, hash and the name, version and inputs it declares. It verifies
// each pin first and never starts a binary that fails it; each started
// plugin gets only the Info RPC, no Configure, and is stopped at once. The
// error joins every row's Err.
func Describe(ctx context.Context, cfg config.Config, log *slog.Logger) ([]Description, error) {
	h := NewHost(cfg, log)
	var out []Description
	var errs []error
	for _, name := range pluginNames(cfg.Auth) {
		d := Description{Name: name, Pinned: cfg.Plugins.Instances[name].SHA256 != ""}
		d.Err = describeOne(ctx, h, cfg, &d)
		if d.Err != nil {
			errs = append(errs, d.Err)
		}
		out = append(out, d)
	}
	return out, errors.Join(errs...)
}

func describeOne(ctx context.Context, h *Host, cfg config.Config, d *Description) error {
	path, err := resolvePath(cfg.Plugins, d.Name)
	if err != nil {
		return err
	}
	d.Path = path
	if d.SHA256, err = verifyPin(path, cfg.Plugins.Instances[d.Name].SHA256); err != nil {
		return fmt.Errorf("plugin %s: %w", d.Name, err)
	}
	i := newInstance(h, spec{name: d.Name, path: path})
	c, info, err := i.procs[0].launch(ctx, false)
	if err != nil {
		return err
	}
	c.client.Kill()
	d.Version, d.Inputs, d.WantsKeys = info.Version, info.Inputs, info.WantsKeys
	return nil
}

// PinCheck is the outcome of verifying one plugin's sha256 pin.
type PinCheck struct {
	Name     string
	Path     string
	Expected string // "" when the plugin is not pinned
	Actual   string
	Err      error // a mismatch (*PinMismatchError), a missing file, ...
}

// Verify checks, without starting anything, the sha256 pin of every plugin
// cfg uses. The error is nil only when every binary exists and every pin
// matches; an unpinned plugin passes. `agent-server plugins verify` exits
// non-zero when it is not nil.
func Verify(cfg config.Config) ([]PinCheck, error) {
	var out []PinCheck
	var errs []error
	for _, name := range pluginNames(cfg.Auth) {
		pc := PinCheck{Name: name}
		pin := cfg.Plugins.Instances[name].SHA256
		if pin != "" {
			pc.Expected, pc.Err = normalizePin(pin)
		}
		if pc.Err == nil {
			pc.Path, pc.Err = resolvePath(cfg.Plugins, name)
		}
		if pc.Err == nil {
			pc.Actual, pc.Err = verifyPin(pc.Path, pin)
		}
		if pc.Err != nil {
			pc.Err = fmt.Errorf("plugin %s: %w", name, pc.Err)
			errs = append(errs, pc.Err)
		}
		out = append(out, pc)
	}
	return out, errors.Join(errs...)
}
