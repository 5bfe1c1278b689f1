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
//	exit             the process dies at once, with every call in flight
//	panic            panic
type Config struct {
	Mode  string `json:"mode"`
	Sleep string `json:"sleep"`
}

// Plugin misbehaves as configured.
type Plugin struct {
	cfg   Config
	sleep time.Duration
}

// Main is the plugin binary's whole main.
func Main() {
	if strings.Contains(filepath.Base(os.Args[0]), "garbage") {
		fmt.Println("hello from a plugin that prints before serving")
	}
	plugins.Serve(&Plugin{})
}

// Info declares one header input.
func (p *Plugin) Info(context.Context) plugins.Info {
	return plugins.Info{Name: "fault", Version: "0.0.0", Inputs: plugins.Inputs{Headers: []string{InputHeader}}}
}

// Configure reads the mode.
func (p *Plugin) Configure(_ context.Context, req plugins.ConfigureRequest) error {
	if err := req.DecodeConfig(&p.cfg); err != nil {
		return err
	}
	switch p.cfg.Mode {
	case "allow", "panic", "exit":
	case "header":
		if p.cfg.Sleep == "" {
			break
		}
		fallthrough
	case "sleep":
		d, err := time.ParseDuration(p.cfg.Sleep)
		if err != nil {
			return fmt.Errorf("sleep %q: %w", p.cfg.Sleep, err)
		}
		p.sleep = d
	default:
		return fmt.Errorf("unknown mode %q", p.cfg.Mode)
	}
	return nil
}

// Authenticate misbehaves.
func (p *Plugin) Authenticate(_ context.Context, req *core.Request) core.Result {
	if p.cfg.Mode == "header" {
		what, subject, _ := strings.Cut(plugins.HeaderValue(req, InputHeader), ":")
		switch what {
		case "hold":
			time.Sleep(p.sleep)
		case "exit":
			os.Exit(3)
		case "panic":
			panic("faultplugin: deliberate panic")
		}
		return core.Allowed(&core.Principal{Subject: subject})
	}
	switch p.cfg.Mode {
	case "sleep":
		time.Sleep(p.sleep)
	case "panic":
		panic("faultplugin: deliberate panic")
	case "exit":
		os.Exit(3)
	}
	return core.Allowed(&core.Principal{Subject: "fault"})
}
