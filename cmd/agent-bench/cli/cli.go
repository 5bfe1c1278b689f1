// Package cli implements the agent-bench command line. main only calls
// Main.
//
//	agent-bench [flags]            run the benchmark (package suite)
//	agent-bench baseline [flags]   serve the reference server (package baseline)
//	agent-bench cluster [flags]    run the cluster benchmark (suite.RunCluster)
//	agent-bench observe [flags]    run the storm's paced fan-out (load.RunObserver)
//
// Without -addr, agent-bench starts every server itself, each in its own
// process: bin/agent-server with bin/plugins, and the baseline by running
// this same binary as "agent-bench baseline". With -addr it measures the one
// server already listening there. The reconnect storm runs its paced
// fan-out as "agent-bench observe", a process apart from the generator.
package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/bench/suite"
	"github.com/agent-server/agent-server/bench/target"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// Main runs the command line args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	var err error
	if len(args) > 0 && args[0] == "baseline" {
		err = serveBaseline(args[1:], stderr)
	} else if len(args) > 0 && args[0] == "observe" {
		err = load.RunObserver(context.Background(), args[1:], os.Getenv, os.Stdin, stdout, stderr)
	} else if len(args) > 0 && args[0] == "cluster" {
		err = benchCluster(args[1:], stdout, stderr)
	} else {
		err = bench(args, stdout, stderr)
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitUsage
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "agent-bench:", err)
		return exitUsage
	}
	fmt.Fprintln(stderr, "agent-bench:", err)
	return exitError
}

var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// bench parses the run flags, runs the suite and prints the report.
func bench(args []string, stdout, stderr io.Writer) error {
	d := suite.Defaults()
	p := d
	fs := flag.NewFlagSet("agent-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stormFlags(fs, &p.Storm)
	var (
		targetName = fs.String("target", "both", "servers to measure, comma-separated: agent-server, agent-server-nometrics (metrics.enabled: false), baseline; both means agent-server,baseline")
		addr       = fs.String("addr", "", "measure the server already listening at host:port instead of starting one (one -target only)")
		pid        = fs.Int("pid", 0, "with -addr: the server's pid, to read its RSS and CPU")
		key        = fs.String("key", "", "session API key (default: a random one for the servers started here; required with -addr)")
		auth       = fs.String("auth", string(d.Auth), "where connections put the key: query, header, bearer or jwt")
		jwtSecret  = fs.String("jwt-secret", "", "HS256 secret for connect-jwt, reconnect-storm and -auth=jwt (default: random)")
		scenario   = fs.String("scenario", "all", "comma-separated cases, or all: "+strings.Join(suite.Cases, ", "))
		n          = fs.Int("n", 0, "connections in connect, reject, connect-jwt and idle (default per case: 10000, 10000, 5000, 10000)")
		c          = fs.Int("c", 0, "concurrency: connections in flight at once, in every case")
		subs       = fs.Int("subs", d.Subs, "fanout subscribers, the publisher included")
		msgs       = fs.Int("msgs", d.Msgs, "fanout messages (back to back)")
		pacedMsgs  = fs.Int("paced-msgs", d.PacedMsgs, "fanout-paced messages")
		size       = fs.Int("size", d.Size, "message text bytes")
		rate       = fs.Float64("rate", d.PacedRate, "fanout-paced messages per second")
		churnRate  = fs.Float64("churn-rate", d.ChurnRate, "churn connections per second")
		duration   = fs.Duration("duration", d.ChurnDuration, "churn duration")
		hold       = fs.Duration("hold", d.IdleHold, "how long idle connections are held")
		settle     = fs.Duration("settle", d.ChurnSettle, "longest wait for the RSS to come back after churn")
		quietSubs  = fs.Int("storm-quiet-subs", d.Storm.QuietSubs, "reconnect-storm: subscribers of the paced fan-out that stays up")
		quietRate  = fs.Float64("storm-quiet-rate", d.Storm.QuietRate, "reconnect-storm: messages per second of that fan-out")
		runs       = fs.Int("runs", 3, "runs of every case")
		out        = fs.String("out", "text", "report format: text, markdown or json")
		jsonOut    = fs.String("json-out", "", "also write every measurement as JSON to this file")
		serverBin  = fs.String("server-bin", "bin/agent-server", "agent-server binary")
		pluginDir  = fs.String("plugin-dir", "bin/plugins", "agent-server's plugin directory")
		serverCPUs = fs.String("server-cpus", defaultServerCPUs(), "taskset -c CPU list for the servers started here; empty for none")
		storage    = fs.String("storage", "", "agent-server's storage.driver (bolt or memory); empty keeps its default")
		pprofOn    = fs.Bool("server-pprof", false, "serve agent-server's profiles on its admin listener (admin.pprof); the progress lines give the address")
		cpuprofile = fs.String("cpuprofile", "", "write the generator's CPU profile to this file")
		quiet      = fs.Bool("q", false, "no progress lines on stderr")
		serverEnv  envList
	)
	fs.Var(&serverEnv, "server-env", "KEY=VALUE added to the started servers' environment; repeatable (e.g. GOGC=200)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: agent-bench [flags]\n       agent-bench baseline [-addr HOST:PORT] [-key KEY] [-jwt-secret S]\n       agent-bench cluster [flags] (see agent-bench cluster -h)\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}

	a, err := load.ParseAuth(*auth)
	if err != nil {
		return usageErr("%v", err)
	}
	p.Auth = a
	if *n > 0 {
		p.ConnectN, p.JWTN, p.IdleN = *n, *n, *n
	}
	if *c > 0 {
		p.ConnectC, p.FanoutC, p.IdleC, p.ChurnC = *c, *c, *c, *c
	}
	p.Subs, p.Msgs, p.PacedMsgs, p.Size, p.PacedRate = *subs, *msgs, *pacedMsgs, *size, *rate
	p.ChurnRate, p.ChurnDuration, p.IdleHold, p.ChurnSettle = *churnRate, *duration, *hold, *settle
	p.Storm.QuietSubs, p.Storm.QuietRate, p.Storm.Size = *quietSubs, *quietRate, *size
	if *c > 0 {
		p.Storm.Concurrency = *c
	}

	cfg := suite.Config{
		Runs: *runs, Params: p, Key: *key, JWTSecret: *jwtSecret,
		ServerBin: *serverBin, PluginDir: *pluginDir, ServerCPUs: *serverCPUs, ServerEnv: serverEnv,
		Storage: *storage, Pprof: *pprofOn,
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	if cfg.Cases, err = parseCases(*scenario); err != nil {
		return err
	}
	if *targetName == "both" {
		*targetName = string(target.AgentServer) + "," + string(target.Baseline)
	}
	for _, name := range strings.Split(*targetName, ",") {
		k, err := target.ParseKind(strings.TrimSpace(name))
		if err != nil {
			return usageErr("%v", err)
		}
		cfg.Targets = append(cfg.Targets, k)
	}
	if cfg.JWTSecret == "" {
		cfg.JWTSecret = random(24)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.ObserverCmd = []string{exe, "observe"}
	if *addr != "" {
		if len(cfg.Targets) != 1 || *key == "" {
			return usageErr("-addr needs one -target and a -key")
		}
		cfg.External = target.External(cfg.Targets[0], *addr, *key, *pid)
	} else {
		if cfg.Key == "" {
			cfg.Key = random(16)
		}
		cfg.BaselineCmd = []string{exe, "baseline"}
	}
	switch *out {
	case "text", "markdown", "json":
	default:
		return usageErr("-out %q: want text, markdown or json", *out)
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if need := max(p.IdleN, p.Subs, p.Storm.N+p.Storm.N/max(p.Storm.PerConversation, 1)+p.Storm.QuietSubs); raiseFileLimit() < uint64(need)+1024 {
		fmt.Fprintf(stderr, "agent-bench: warning: open-file limit is low for %d connections\n", need)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := suite.Run(ctx, cfg)
	if rep != nil && *jsonOut != "" {
		if jerr := writeJSON(*jsonOut, rep); jerr != nil && err == nil {
			err = jerr
		}
	}
	if rep != nil {
		switch *out {
		case "markdown":
			fmt.Fprintf(stdout, "%s\n\n", Describe(cfg, rep))
			rep.Markdown(stdout)
		case "json":
			if jerr := rep.JSON(stdout); jerr != nil && err == nil {
				err = jerr
			}
		default:
			rep.Text(stdout)
		}
	}
	return err
}

// writeJSON writes rep's measurements to path.
func writeJSON(path string, rep *suite.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.JSON(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// envList is a repeatable KEY=VALUE flag.
type envList []string

func (e *envList) String() string { return strings.Join(*e, " ") }

// Set adds one KEY=VALUE.
func (e *envList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

// parseCases reads -scenario.
func parseCases(s string) ([]string, error) {
	if s == "all" {
		return suite.Cases, nil
	}
	var out []string
	for _, c := range strings.Split(s, ",") {
		c = strings.TrimSpace(c)
		found := false
		for _, known := range suite.Cases {
			if c == known {
				found = true
			}
		}
		if !found {
			return nil, usageErr("-scenario %q: want all or some of %s", c, strings.Join(suite.Cases, ", "))
		}
		out = append(out, c)
	}
	return out, nil
}

// defaultServerCPUs pins the servers to CPU 0 when taskset exists and the
// machine has more than one CPU online; run the generator under taskset -c
// 1. (runtime.NumCPU counts only the CPUs this process may use, which is
// one under taskset.)
func defaultServerCPUs() string {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil || strings.TrimSpace(string(b)) == "0" {
		return ""
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return ""
	}
	return "0"
}

// Describe is the report's header: when, how, on what.
func Describe(cfg suite.Config, rep *suite.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s, %d run(s), %s in total. Each cell: median [min-max] over the runs.\n",
		rep.Started.UTC().Format("2006-01-02 15:04 MST"), cfg.Runs, rep.Finished.Sub(rep.Started).Round(time.Second))
	fmt.Fprintf(&b, "Machine: %s.\n", machine())
	pin := "not pinned"
	if cfg.ServerCPUs != "" {
		pin = "servers pinned to CPU " + cfg.ServerCPUs + " (plugins with them)"
	}
	fmt.Fprintf(&b, "Generator: GOMAXPROCS=%d, %s.\n", runtime.GOMAXPROCS(0), pin)
	storage := "its default storage driver"
	if cfg.Storage != "" {
		storage = "storage.driver " + cfg.Storage
	}
	fmt.Fprintf(&b, "agent-server: default config with %s (metrics, audit log to stderr and access log on), except a bench key, failures_per_minute 0, messages_per_second 0 and the subscriber cap the fan-out needs", storage)
	if slices.Contains(cfg.Cases, suite.CaseStorm) {
		fmt.Fprintf(&b, "; reconnect-storm: the jwt plugin in the events chain, the decision cache on with its defaults, the drop %s after the last first connect (auth.cache.allow_ttl is 10s), so no storm client's decision is cached", cfg.Params.Storm.Hold)
	}
	if slices.Contains(cfg.Targets, target.AgentServerNoMetrics) {
		b.WriteString("; agent-server-nometrics: the same with metrics.enabled false")
	}
	b.WriteString(".")
	return b.String()
}

// random returns n random bytes in hex.
func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
