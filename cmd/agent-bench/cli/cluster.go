package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/bench/suite"
	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

// benchCluster is "agent-bench cluster": agent-server in cluster mode
// against a single node on the same PostgreSQL, the recovery trials and
// the cluster storm's trials (package suite's RunCluster). Without -pg-dsn it starts a throwaway
// PostgreSQL of its own, as `go tool task cluster` does.
func benchCluster(args []string, stdout, stderr io.Writer) error {
	d := suite.Defaults()
	rd := load.RecoveryParams{}.WithDefaults()
	p := d
	fs := flag.NewFlagSet("agent-bench cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stormFlags(fs, &p.Storm)
	var (
		scenario   = fs.String("scenario", "all", "comma-separated cases, or all: "+strings.Join(suite.ClusterCases, ", "))
		nodes      = fs.Int("nodes", 3, "cluster nodes")
		runs       = fs.Int("runs", 5, "runs of the fan-out and connect cases, cluster and single node each")
		trials     = fs.Int("trials", 7, "recovery trials, a fresh cluster each")
		heartbeat  = fs.Duration("heartbeat", 3*time.Second, "cluster.heartbeat_expiration")
		key        = fs.String("key", "", "session API key (default: a random one)")
		auth       = fs.String("auth", string(d.Auth), "where sockets put the key: query, header or bearer")
		n          = fs.Int("n", d.ConnectN, "connections in cluster-connect")
		c          = fs.Int("c", d.ConnectC, "connections in flight at once (connect, fan-out joins, cluster-storm first connects)")
		subs       = fs.Int("subs", d.Subs, "fan-out subscribers over all nodes, the publisher included")
		msgs       = fs.Int("msgs", d.Msgs, "cluster-fanout messages (back to back)")
		pacedMsgs  = fs.Int("paced-msgs", d.PacedMsgs, "cluster-fanout-paced messages")
		rate       = fs.Float64("rate", d.PacedRate, "cluster-fanout-paced messages per second")
		size       = fs.Int("size", d.Size, "message text bytes")
		recConvs   = fs.Int("recovery-convs", rd.Conversations, "recovery: conversations, owned in turn by the nodes")
		recReaders = fs.Int("recovery-readers", rd.ReadersPerNode, "recovery: sockets per conversation through each node")
		recWriters = fs.Int("recovery-writers", rd.Writers, "recovery: REST writers")
		recRate    = fs.Float64("recovery-rate", rd.Rate, "recovery: posts per second, all writers together")
		recWarmup  = fs.Duration("recovery-warmup", rd.Warmup, "recovery: load before the kill")
		stTrials   = fs.Int("storm-trials", 3, "cluster-storm trials, each on a fresh cluster and a fresh single node")
		jwtSecret  = fs.String("jwt-secret", "", "HS256 secret of the cluster-storm JWTs (default: random)")
		logDir     = fs.String("logs", "", "write every server's log to this directory, a file per node and measurement")
		pgDSN      = fs.String("pg-dsn", "", "postgres:// URL of a database to use (a schema per measurement); default: a throwaway PostgreSQL started here")
		serverBin  = fs.String("server-bin", "bin/agent-server", "agent-server binary")
		pluginDir  = fs.String("plugin-dir", "bin/plugins", "agent-server's plugin directory")
		serverCPUs = fs.String("server-cpus", "", "taskset -c CPU list for every server; empty (the default) lets the nodes share every CPU")
		out        = fs.String("out", "text", "report format: text, markdown or json")
		jsonOut    = fs.String("json-out", "", "also write every measurement as JSON to this file")
		quiet      = fs.Bool("q", false, "no progress lines on stderr")
		serverEnv  envList
	)
	fs.Var(&serverEnv, "server-env", "KEY=VALUE added to every server's environment; repeatable")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: agent-bench cluster [flags]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	a, err := load.ParseAuth(*auth)
	if err != nil || a == load.AuthJWT {
		return usageErr("-auth %q: want query, header or bearer", *auth)
	}
	switch *out {
	case "text", "markdown", "json":
	default:
		return usageErr("-out %q: want text, markdown or json", *out)
	}
	p.Auth, p.ConnectN, p.ConnectC, p.FanoutC = a, *n, *c, *c
	p.Subs, p.Msgs, p.PacedMsgs, p.PacedRate, p.Size = *subs, *msgs, *pacedMsgs, *rate, *size
	p.Storm.Concurrency, p.Storm.Size = *c, *size
	cfg := suite.ClusterConfig{
		Nodes: *nodes, Runs: *runs, Trials: *trials, StormTrials: *stTrials, Params: p, HeartbeatExpiration: *heartbeat, JWTSecret: *jwtSecret,
		Recovery: load.RecoveryParams{Conversations: *recConvs, ReadersPerNode: *recReaders, Writers: *recWriters, Rate: *recRate, Warmup: *recWarmup},
		Key:      *key, ServerBin: *serverBin, PluginDir: *pluginDir, ServerCPUs: *serverCPUs, ServerEnv: serverEnv,
		PostgresDSN: *pgDSN, LogDir: *logDir,
	}
	if cfg.Key == "" {
		cfg.Key = random(16)
	}
	if cfg.JWTSecret == "" {
		cfg.JWTSecret = random(24)
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	if cfg.Cases, err = parseClusterCases(*scenario); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.ServerBin); err != nil {
		return fmt.Errorf("%w (build it with go tool task build)", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pgNote := "an existing PostgreSQL (-pg-dsn)"
	if cfg.PostgresDSN == "" {
		if !*quiet {
			fmt.Fprintln(stderr, "starting a throwaway PostgreSQL...")
		}
		pg, err := pgtest.New()
		if errors.Is(err, pgtest.ErrMissing) {
			return err
		}
		if err != nil {
			return fmt.Errorf("PostgreSQL: %w", err)
		}
		defer pg.Remove()
		cfg.PostgresDSN = pg.DSN("postgres")
		pgNote = "a throwaway PostgreSQL started by agent-bench (core/pgstore/pgtest: loopback, fsync and synchronous_commit on)"
	}
	if v, err := suite.PostgresVersion(ctx, cfg.PostgresDSN); err == nil {
		pgNote = "PostgreSQL " + v + ", " + pgNote
	}
	need := p.Subs
	if slices.Contains(cfg.Cases, suite.CaseClusterStorm) {
		need = max(need, p.Storm.N+p.Storm.N/max(p.Storm.PerConversation, 1)*cfg.Nodes)
	}
	if lim := raiseFileLimit(); lim < uint64(need)+1024 {
		fmt.Fprintf(stderr, "agent-bench: warning: open-file limit %d is low for %d connections\n", lim, need)
	}
	loads := [2]string{loadAverage()}
	rep, err := suite.RunCluster(ctx, cfg)
	loads[1] = loadAverage()
	if rep != nil && *jsonOut != "" {
		if jerr := writeJSONTo(*jsonOut, rep.JSON); jerr != nil && err == nil {
			err = jerr
		}
	}
	if rep != nil {
		switch *out {
		case "markdown":
			fmt.Fprintf(stdout, "%s\n\n", describeCluster(cfg, rep, pgNote, loads))
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

// writeJSONTo writes a report's JSON to path.
func writeJSONTo(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// parseClusterCases reads the cluster -scenario.
func parseClusterCases(s string) ([]string, error) {
	if s == "all" {
		return suite.ClusterCases, nil
	}
	var out []string
	for _, c := range strings.Split(s, ",") {
		c = strings.TrimSpace(c)
		known := false
		for _, k := range suite.ClusterCases {
			known = known || c == k
		}
		if !known {
			return nil, usageErr("-scenario %q: want all or some of %s", c, strings.Join(suite.ClusterCases, ", "))
		}
		out = append(out, c)
	}
	return out, nil
}

// loadAverage is the machine's 1-minute load average, "?" when unknown.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// describeCluster is the cluster report's header: when, how, on what.
func describeCluster(cfg suite.ClusterConfig, rep *suite.ClusterReport, pg string, loads [2]string) string {
	var b strings.Builder
	var what []string
	if slices.ContainsFunc(cfg.Cases, suite.ComparisonCase) {
		what = append(what, fmt.Sprintf("%d run(s) of each comparison", cfg.Runs))
	}
	if slices.Contains(cfg.Cases, suite.CaseRecovery) {
		what = append(what, fmt.Sprintf("%d recovery trial(s)", cfg.Trials))
	}
	if slices.Contains(cfg.Cases, suite.CaseClusterStorm) {
		what = append(what, fmt.Sprintf("%d cluster-storm trial(s), cluster and single node each", cfg.StormTrials))
	}
	fmt.Fprintf(&b, "Measured %s, %s, %s in total. Each cell: median [min-max] over the runs (trials).\n",
		rep.Started.UTC().Format("2006-01-02 15:04 MST"), strings.Join(what, ", "), rep.Finished.Sub(rep.Started).Round(time.Second))
	fmt.Fprintf(&b, "Machine: %s; 1-minute load average %s at the start, %s at the end.\n", machine(), loads[0], loads[1])
	pin := "no server is pinned: the nodes (or the single node), PostgreSQL and the generator share every CPU"
	if cfg.ServerCPUs != "" {
		pin = "servers pinned to CPU " + cfg.ServerCPUs
	}
	fmt.Fprintf(&b, "Generator: GOMAXPROCS=%d; %s.\n", runtime.GOMAXPROCS(0), pin)
	fmt.Fprintf(&b, "Cluster: %d agent-server nodes on loopback, static provider, cluster.heartbeat_expiration %s, set by AGENT_SERVER_... variables; single node: the same binary and config, not in cluster mode. Both on storage.driver postgres: %s, a fresh schema per measurement.\n",
		cfg.Nodes, cfg.HeartbeatExpiration, pg)
	b.WriteString("agent-server: default config except a bench key, failures_per_minute 0, messages_per_second 0 and the subscriber cap the fan-out needs")
	if slices.Contains(cfg.Cases, suite.CaseClusterStorm) {
		fmt.Fprintf(&b, "; cluster-storm: the jwt plugin in the events chain, the decision cache on with its defaults (each node's its own); the single node's drop comes %s after the last first connect (auth.cache.allow_ttl is 10s), so no dropped client's decision is cached on either side", cfg.Params.Storm.Hold)
	}
	b.WriteString(".")
	return b.String()
}
