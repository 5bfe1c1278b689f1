// Package cli implements the agent-server command line: serve, config check,
// plugins list and verify, and version. main only calls Main.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/agent-server/agent-server/core/config"
)

// Version is the build's version, set with -ldflags -X at build time.
var Version = "dev"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	// exitRestart (EX_TEMPFAIL) asks a supervisor to start the server
	// again: the node left the cluster and must rejoin as a new member.
	exitRestart = 75
)

const usage = `usage: agent-server <command> [flags]

commands:
  serve            run the server (flags: --config FILE, --addr HOST:PORT, --admin-addr HOST:PORT)
  config check     validate a config and print it with secrets masked (--config FILE)
  plugins list     show what the configured chains would load (--config FILE)
  plugins verify   check every plugin's sha256 pin; non-zero exit on a mismatch
  storage migrate  apply the postgres schema migrations without serving (--config FILE, --timeout 5m)
  storage copy     copy every conversation and event between stores, keeping IDs, Seq and
                   timestamps; safe to rerun (--from bolt:PATH|postgres:[DSN] --to ...)
  version          print the version
`

// Main runs the command line args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; {
	case cmd == "serve":
		err = serve(rest, stderr)
	case cmd == "version" || cmd == "--version":
		fmt.Fprintln(stdout, "agent-server", Version)
	case cmd == "config" && len(rest) > 0 && rest[0] == "check":
		err = configCheck(rest[1:], stdout)
	case cmd == "plugins" && len(rest) > 0 && rest[0] == "list":
		err = pluginsList(rest[1:], stdout)
	case cmd == "plugins" && len(rest) > 0 && rest[0] == "verify":
		err = pluginsVerify(rest[1:], stdout)
	case cmd == "storage" && len(rest) > 0 && rest[0] == "migrate":
		err = storageMigrate(rest[1:], stdout, stderr)
	case cmd == "storage" && len(rest) > 0 && rest[0] == "copy":
		err = storageCopy(rest[1:], stdout, stderr)
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "agent-server: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitUsage
		}
		if errors.Is(err, errLeft) {
			fmt.Fprintln(stderr, "agent-server:", err)
			return exitRestart
		}
		fmt.Fprintln(stderr, "agent-server:", err)
		return exitError
	}
	return exitOK
}

// configFlags are the flags every config-reading command takes.
type configFlags struct {
	file      string
	addr      string
	adminAddr *string // nil when --admin-addr is not given
}

func parseFlags(name string, args []string, withAddr bool) (configFlags, error) {
	var f configFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.file, "config", "", "config file (default ./config.yaml if it exists)")
	if withAddr {
		fs.StringVar(&f.addr, "addr", "", "listen address host:port (overrides server.addr)")
		fs.Func("admin-addr", "admin listener host:port for /metrics, health and profiles; empty turns it off (overrides admin.addr)", func(v string) error {
			f.adminAddr = &v
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	return f, nil
}

// path is the config file the flags name: --config, else ./config.yaml if
// it exists, else "" (defaults only).
func (f configFlags) path() string {
	if f.file != "" {
		return f.file
	}
	if _, err := os.Stat("config.yaml"); err == nil {
		return "config.yaml"
	}
	return ""
}

// load reads the configuration the flags name.
func (f configFlags) load() (config.Config, error) {
	src := config.Source{File: f.path(), Overrides: map[string]string{}}
	if f.addr != "" {
		src.Overrides["server.addr"] = f.addr
	}
	if f.adminAddr != nil {
		src.Overrides["admin.addr"] = *f.adminAddr
	}
	return config.Load(src)
}

func configCheck(args []string, stdout io.Writer) error {
	f, err := parseFlags("config check", args, false)
	if err != nil {
		return err
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	out, err := cfg.Render()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "# config is valid; effective values, secrets masked:")
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stdout, "# warning:", w)
	}
	fmt.Fprint(stdout, out)
	return nil
}
