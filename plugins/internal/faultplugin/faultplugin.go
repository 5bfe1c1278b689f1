// Package faultplugin is a misbehaving authenticator plugin for the host's
// fault tests. Its config picks how it misbehaves in Authenticate; run from
// a binary whose name contains "garbage" it writes to stdout before the
// handshake.
package faultplugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
)

// InputHeader is the header the plugin reads; any non-empty value triggers it.
const InputHeader = "X-Fault"

// Config selects the behaviour: mode is "allow", "sleep" (ignore the
// deadline for sleep, then allow), "panic", "exit" (the process dies
// mid-request) or "header", where each request's X-Fault value picks:
//
//	allow:<subject>  allow as <subject>
//	hold:<subject>   wait for sleep (ignoring the deadline), then allow as <subject>
//	key:<key>        allow as "key" when <key> is one of the session API keys it was configured with, else deny
//	exit             the process dies at once, with every call in flight
//	panic            panic
//
// With RefuseReconfigure, every Configure after a process's first fails
// and changes nothing, as a plugin that cannot apply a reload would. With
// ClaimFile, a Configure that finds that file already there fails and
// changes nothing, and one that does not creates it: of processes
// configured in turn, the first takes the config and the others refuse it.
// With ConfigureDelay, Configure logs "configuring" and then takes that
// long.
type Config struct {
	Mode              string `json:"mode"`
	Sleep             string `json:"sleep"`
	RefuseReconfigure bool   `json:"refuse_reconfigure"`
	ConfigureDelay    string `json:"configure_delay"`
	ClaimFile         string `json:"claim_file"`
}

// Plugin misbehaves as configured.
type Plugin struct {
	mu         sync.Mutex // guards the fields below: Configure runs while calls do
	configured bool
	cfg        Config
	sleep      time.Duration
	keys       *core.KeySet
}

// Main is the plugin binary's whole main.
func Main() {
	if strings.Contains(filepath.Base(os.Args[0]), "garbage") {
		fmt.Println("hello from a plugin that prints before serving")
	}
	plugins.Serve(&Plugin{})
}

// Info declares one header input, and wants the session API keys.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{Name: "fault", Version: "0.0.0", Inputs: plugins.Inputs{Headers: []string{InputHeader}}, WantsKeys: true}
}

// Configure reads the mode and the keys.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.configured && p.cfg.RefuseReconfigure {
		return fmt.Errorf("refuse_reconfigure: this process takes no config after its first")
	}
	var cfg Config
	if err := req.DecodeConfig(&cfg); err != nil {
		return err
	}
	if cfg.ClaimFile != "" {
		f, err := os.OpenFile(cfg.ClaimFile, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("claim_file: another process took this config: %w", err)
		}
		_ = f.Close()
	}
	if cfg.ConfigureDelay != "" {
		d, err := time.ParseDuration(cfg.ConfigureDelay)
		if err != nil {
			return fmt.Errorf("configure_delay %q: %w", cfg.ConfigureDelay, err)
		}
		plugins.Logger().Info("configuring")
		time.Sleep(d)
	}
	var sleep time.Duration
	switch cfg.Mode {
	case "allow", "panic", "exit":
	case "header":
		if cfg.Sleep == "" {
			break
		}
		fallthrough
	case "sleep":
		d, err := time.ParseDuration(cfg.Sleep)
		if err != nil {
			return fmt.Errorf("sleep %q: %w", cfg.Sleep, err)
		}
		sleep = d
	default:
		return fmt.Errorf("unknown mode %q", cfg.Mode)
	}
	keys, err := core.NewKeySet(req.KeyDigests)
	if err != nil {
		return err
	}
	p.configured, p.cfg, p.sleep, p.keys = true, cfg, sleep, keys
	return nil
}

// Authenticate misbehaves.
func (p *Plugin) Authenticate(_ context.Context, req *core.Request) core.Result {
	p.mu.Lock()
	mode, sleep, keys := p.cfg.Mode, p.sleep, p.keys
	p.mu.Unlock()
	if mode == "header" {
		what, subject, _ := strings.Cut(plugins.HeaderValue(req, InputHeader), ":")
		switch what {
		case "hold":
			time.Sleep(sleep)
		case "key":
			if !keys.Match(subject) {
				return core.Denied("not a session API key")
			}
			return core.Allowed(&core.Principal{Subject: "key"})
		case "exit":
			os.Exit(3)
		case "panic":
			panic("faultplugin: deliberate panic")
		}
		return core.Allowed(&core.Principal{Subject: subject})
	}
	switch mode {
	case "sleep":
		time.Sleep(sleep)
	case "panic":
		panic("faultplugin: deliberate panic")
	case "exit":
		os.Exit(3)
	}
	return core.Allowed(&core.Principal{Subject: "fault"})
}
