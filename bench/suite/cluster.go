package suite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/bench/target"
)

// The cluster cases: agent-server in cluster mode (Nodes nodes on
// loopback, static provider, one PostgreSQL) against a single node on
// PostgreSQL, measured one after the other in the same run; the recovery
// trials, which only a cluster has; and the cluster storm's trials, each
// on a cluster and on a single node.
const (
	// CaseClusterFanout: Subs subscribers spread evenly over the nodes,
	// the publisher (a socket) on node 0, the conversation owned by the
	// last node; Msgs messages back to back.
	CaseClusterFanout = "cluster-fanout"
	// CaseClusterFanoutPaced: the same at PacedRate.
	CaseClusterFanoutPaced = "cluster-fanout-paced"
	// CaseClusterConnect: connects through node 0 to conversations
	// another node owns.
	CaseClusterConnect = "cluster-connect"
	// CaseRecovery: SIGKILL the node owning conversations under load; a
	// fresh cluster per trial.
	CaseRecovery = "recovery"
	// CaseClusterStorm: the reconnect storm of distinct-JWT clients when
	// a node is SIGKILLed (load.ClusterStorm); on the single node, the
	// same share of the clients drop their sockets. A fresh cluster and
	// single node per trial.
	CaseClusterStorm = "cluster-storm"
)

// ClusterCases lists every cluster case in order.
var ClusterCases = []string{CaseClusterFanout, CaseClusterFanoutPaced, CaseClusterConnect, CaseRecovery, CaseClusterStorm}

// The two sides of a cluster comparison.
const (
	SideCluster = "cluster"
	SideSingle  = "single" // one node, storage.driver postgres, same PostgreSQL
)

// ClusterConfig is one cluster benchmark.
type ClusterConfig struct {
	Cases  []string
	Nodes  int // at least 2
	Runs   int // runs of the fan-out and connect cases
	Trials int // recovery trials
	// StormTrials are the cluster storm's trials, each on a cluster and
	// on a single node.
	StormTrials int

	// Params' Auth, fan-out (Subs, Msgs, Size, PacedRate, PacedMsgs,
	// FanoutC) and connect (ConnectN, ConnectC) fields apply, and Storm
	// (its Credentials set per trial, its quiet fan-out not run) for the
	// cluster storm.
	Params Params
	// Recovery's load; Credentials and Victim are set per trial.
	Recovery            load.RecoveryParams
	HeartbeatExpiration time.Duration // cluster.heartbeat_expiration (3s when zero)

	Key         string // session API key
	JWTSecret   string // HS256 secret of the cluster storm's JWTs (at least 32 bytes)
	ServerBin   string
	PluginDir   string
	ServerCPUs  string   // taskset -c list for every node and the single node; empty for none
	ServerEnv   []string // extra environment for every server
	PostgresDSN string   // a postgres:// URL; each measurement gets a fresh schema there
	// LogDir, when set, receives every server's log, a file per node and
	// measurement (<case>-<side>-<run>-node<i>.log).
	LogDir string

	Progress io.Writer // one line per measurement; nil for none
}

// ClusterMeasurement is one cluster case on one side in one run (or one
// recovery trial).
type ClusterMeasurement struct {
	Case   string        `json:"case"`
	Side   string        `json:"side"`
	Run    int           `json:"run"` // the trial, for recovery
	Result any           `json:"result,omitempty"`
	Err    string        `json:"error,omitempty"`
	Took   time.Duration `json:"took"`

	ServerErrorLines int      `json:"server_error_lines"`      // stderr lines at level ERROR, every node
	ServerErrors     []string `json:"server_errors,omitempty"` // the first of them
	// StoreGaps counts, after a recovery trial, the conversations whose
	// row count in PostgreSQL is not their max(seq).
	StoreGaps int      `json:"store_gaps"`
	metrics   []metric // derived from Result
}

// ClusterReport is a finished (or interrupted) cluster benchmark.
type ClusterReport struct {
	Config       ClusterConfig        `json:"-"`
	Started      time.Time            `json:"started"`
	Finished     time.Time            `json:"finished"`
	Measurements []ClusterMeasurement `json:"measurements"`
}

// RunCluster runs the cluster benchmark: every comparison case, cluster
// and single node in turn (which goes first alternates by run), for Runs
// runs, then Trials recovery trials, then StormTrials cluster storm
// trials, cluster and single node in turn (alternating likewise). A case
// that fails is recorded with its error and the run goes on.
func RunCluster(ctx context.Context, cfg ClusterConfig) (*ClusterReport, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg.Recovery = cfg.Recovery.WithDefaults()
	rep := &ClusterReport{Config: cfg, Started: time.Now()}
	record := func(m ClusterMeasurement) {
		rep.Measurements = append(rep.Measurements, m)
		if cfg.Progress != nil {
			fmt.Fprintln(cfg.Progress, m.line())
		}
	}
	for run := 1; run <= cfg.Runs; run++ {
		for _, c := range cfg.Cases {
			if !ComparisonCase(c) {
				continue
			}
			for _, side := range sides(run) {
				if err := ctx.Err(); err != nil {
					return rep, err
				}
				record(measureCluster(ctx, cfg, c, side, run))
			}
		}
	}
	if slices.Contains(cfg.Cases, CaseRecovery) {
		for trial := 1; trial <= cfg.Trials; trial++ {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			record(measureRecovery(ctx, cfg, trial))
		}
	}
	if slices.Contains(cfg.Cases, CaseClusterStorm) {
		for trial := 1; trial <= cfg.StormTrials; trial++ {
			for _, side := range sides(trial) {
				if err := ctx.Err(); err != nil {
					return rep, err
				}
				record(measureClusterStorm(ctx, cfg, side, trial))
			}
		}
	}
	rep.Finished = time.Now()
	return rep, ctx.Err()
}

// ComparisonCase reports whether c is a comparison case, measured Runs times
// on both sides.
func ComparisonCase(c string) bool { return c != CaseRecovery && c != CaseClusterStorm }

// sides are the two sides in the order run (or trial) n measures them.
func sides(n int) []string {
	if n%2 == 0 {
		return []string{SideSingle, SideCluster}
	}
	return []string{SideCluster, SideSingle}
}

func (cfg *ClusterConfig) check() error {
	switch {
	case cfg.Nodes < 2:
		return errors.New("a cluster of at least 2 nodes")
	case cfg.Runs < 1 && slices.ContainsFunc(cfg.Cases, ComparisonCase):
		return errors.New("runs must be at least 1")
	case cfg.Trials < 1 && slices.Contains(cfg.Cases, CaseRecovery):
		return errors.New("trials must be at least 1")
	case cfg.StormTrials < 1 && slices.Contains(cfg.Cases, CaseClusterStorm):
		return errors.New("storm trials must be at least 1")
	case len(cfg.JWTSecret) < 32 && slices.Contains(cfg.Cases, CaseClusterStorm):
		return errors.New("cluster-storm needs a JWT secret of at least 32 bytes")
	case len(cfg.Cases) == 0:
		return errors.New("at least one case")
	case cfg.Key == "":
		return errors.New("a key is required")
	case cfg.Params.Auth == load.AuthJWT:
		return errors.New("the cluster cases authenticate with the key, not a JWT")
	}
	for _, c := range cfg.Cases {
		if !slices.Contains(ClusterCases, c) {
			return fmt.Errorf("unknown cluster case %q; cases: %s", c, strings.Join(ClusterCases, ", "))
		}
	}
	u, err := url.Parse(cfg.PostgresDSN)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return errors.New("the PostgreSQL DSN must be a postgres:// URL")
	}
	return nil
}

// spec is the server every side of case c runs; its ERROR lines go to
// errs. The cluster storm's puts the jwt plugin in the events chain.
func (cfg *ClusterConfig) spec(errs *errorLines, c string) target.Spec {
	spec := target.Spec{
		Kind: target.AgentServer, Key: cfg.Key,
		ServerBin: cfg.ServerBin, PluginDir: cfg.PluginDir,
		SubscriberCap: max(cfg.Params.Subs, cfg.Params.Storm.PerConversation, 50) + 8,
		CPUs:          cfg.ServerCPUs,
		Env:           cfg.ServerEnv,
		Log:           errs.see,
	}
	if c == CaseClusterStorm {
		spec.JWTSecret = cfg.JWTSecret
	}
	return spec
}

// nodeLogs writes each node's log lines to a file of its own in dir; nil
// when dir is empty. close closes the files.
func nodeLogs(dir, prefix string) (see func(i int, line string), close func()) {
	if dir == "" {
		return nil, func() {}
	}
	var mu sync.Mutex
	files := map[int]*os.File{}
	see = func(i int, line string) {
		mu.Lock()
		defer mu.Unlock()
		f := files[i]
		if f == nil {
			var err error
			if f, err = os.Create(filepath.Join(dir, fmt.Sprintf("%s-node%d.log", prefix, i))); err != nil {
				return
			}
			files[i] = f
		}
		fmt.Fprintln(f, line)
	}
	return see, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range files {
			f.Close()
		}
	}
}

// errorLines keeps the first lines the servers log at level ERROR. It is
// safe for concurrent use.
type errorLines struct {
	mu    sync.Mutex
	first []string
}

func (e *errorLines) see(line string) {
	if !strings.Contains(line, "level=ERROR") {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.first) < maxErrorLines {
		e.first = append(e.first, line)
	}
}

func (e *errorLines) lines() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.first)
}

// maxErrorLines is how many server ERROR lines a measurement keeps.
const maxErrorLines = 5

func (cfg *ClusterConfig) credentials() load.Credentials {
	return load.Credentials{Auth: cfg.Params.Auth, Key: cfg.Key}
}

// env is what one measurement runs in: a fresh schema, and where its
// servers' log lines go.
type env struct {
	cfg  *ClusterConfig
	m    *ClusterMeasurement
	dsn  string
	errs *errorLines
	see  func(node int, line string) // nil without ClusterConfig.LogDir
	// stopErr is what stopping the servers went wrong with, recorded
	// after the body's own error.
	stopErr error
}

// measureIn runs body in a fresh env and records its time, its servers'
// first ERROR lines and its first error in m.
func measureIn(ctx context.Context, cfg ClusterConfig, m ClusterMeasurement, body func(ctx context.Context, e *env) error) ClusterMeasurement {
	start := time.Now()
	e := &env{cfg: &cfg, m: &m, errs: &errorLines{}}
	e.fail(e.run(ctx, body))
	e.fail(e.stopErr)
	m.Took, m.ServerErrors = time.Since(start), e.errs.lines()
	return m
}

// run runs body on a fresh schema, with the servers' logs where the config
// wants them.
func (e *env) run(ctx context.Context, body func(ctx context.Context, e *env) error) error {
	dsn, drop, err := newSchema(ctx, e.cfg.PostgresDSN)
	if err != nil {
		return err
	}
	defer drop()
	e.dsn = dsn
	var closeLogs func()
	e.see, closeLogs = nodeLogs(e.cfg.LogDir, fmt.Sprintf("%s-%s-%d", e.m.Case, e.m.Side, e.m.Run))
	defer closeLogs()
	return body(ctx, e)
}

// fail records err as the measurement's error unless it has one.
func (e *env) fail(err error) {
	if err != nil && e.m.Err == "" {
		e.m.Err = err.Error()
	}
}

// cluster starts a cluster on the env's schema; stop stops it and records
// its ERROR line count.
func (e *env) cluster(ctx context.Context) (cl *target.Cluster, stop func(), err error) {
	cl, err = target.StartCluster(ctx, target.ClusterSpec{Spec: e.cfg.spec(e.errs, e.m.Case), Nodes: e.cfg.Nodes, DSN: e.dsn, HeartbeatExpiration: e.cfg.HeartbeatExpiration, NodeLog: e.see})
	if err != nil {
		return nil, nil, err
	}
	return cl, func() {
		e.m.ServerErrorLines = cl.ErrorLines()
		e.stopErr = errors.Join(e.stopErr, cl.Stop())
	}, nil
}

// single starts one node, not in cluster mode, on the env's schema.
func (e *env) single(ctx context.Context) (proc *target.Process, stop func(), err error) {
	spec := target.OnPostgres(e.cfg.spec(e.errs, e.m.Case), e.dsn)
	if e.see != nil {
		spec.Log = func(line string) { e.errs.see(line); e.see(0, line) }
	}
	if proc, err = target.Start(ctx, spec); err != nil {
		return nil, nil, err
	}
	return proc, func() {
		e.m.ServerErrorLines = proc.ErrorLines()
		e.stopErr = errors.Join(e.stopErr, proc.Stop())
	}, nil
}

// measureCluster starts a fresh cluster or single node on a fresh schema,
// runs one comparison case against it and stops it.
func measureCluster(ctx context.Context, cfg ClusterConfig, c, side string, run int) ClusterMeasurement {
	return measureIn(ctx, cfg, ClusterMeasurement{Case: c, Side: side, Run: run}, func(ctx context.Context, e *env) error {
		p, creds := cfg.Params, cfg.credentials()
		var srv load.Server
		var addrs []string
		if side == SideCluster {
			cl, stop, err := e.cluster(ctx)
			if err != nil {
				return err
			}
			defer stop()
			n := cl.Load()
			srv = n.Servers[0]
			last := cfg.Nodes - 1
			if c == CaseClusterConnect {
				srv.NewConversation = load.OwnedBy(n, creds, 0, func(o int) bool { return o != 0 })
			} else {
				srv.NewConversation = load.OwnedBy(n, creds, 0, func(o int) bool { return o == last })
				for _, s := range n.Servers {
					addrs = append(addrs, s.Addr)
				}
			}
		} else {
			proc, stop, err := e.single(ctx)
			if err != nil {
				return err
			}
			defer stop()
			srv = proc.Server()
		}
		var res any
		var err error
		switch c {
		case CaseClusterFanout:
			res, err = load.Fanout(ctx, srv, load.FanoutParams{Credentials: creds, Subscribers: p.Subs, Messages: p.Msgs, Size: p.Size, Concurrency: p.FanoutC, Addrs: addrs})
		case CaseClusterFanoutPaced:
			res, err = load.Fanout(ctx, srv, load.FanoutParams{Credentials: creds, Subscribers: p.Subs, Messages: p.PacedMsgs, Size: p.Size, Rate: p.PacedRate, Concurrency: p.FanoutC, Addrs: addrs})
		case CaseClusterConnect:
			res, err = load.Connect(ctx, srv, load.ConnectParams{Credentials: creds, N: p.ConnectN, Concurrency: p.ConnectC})
		}
		if err == nil || !isNil(res) {
			e.m.Result = res
		}
		return err
	})
}

// measureRecovery runs one recovery trial on a fresh cluster and schema,
// killing node (trial-1) mod Nodes, then checks the store.
func measureRecovery(ctx context.Context, cfg ClusterConfig, trial int) ClusterMeasurement {
	return measureIn(ctx, cfg, ClusterMeasurement{Case: CaseRecovery, Side: SideCluster, Run: trial}, func(ctx context.Context, e *env) error {
		cl, stop, err := e.cluster(ctx)
		if err != nil {
			return err
		}
		defer stop()
		p := cfg.Recovery
		p.Credentials, p.Victim = cfg.credentials(), (trial-1)%cfg.Nodes
		r, err := load.Recovery(ctx, cl.Load(), p)
		if r == nil {
			return err
		}
		return e.checked(ctx, r, err)
	})
}

// checked records r, a trial's result, and counts the store's gaps, which
// every trial that kills or drops something ends with.
func (e *env) checked(ctx context.Context, r any, err error) error {
	e.m.Result = r
	var gerr error
	e.m.StoreGaps, gerr = storeGaps(ctx, e.dsn)
	return errors.Join(err, gerr)
}

// measureClusterStorm runs one cluster storm trial on a fresh cluster (or
// single node) and schema: node (trial-1) mod Nodes is killed (on the
// single node, that group of clients drops its sockets); then it checks
// the store.
func measureClusterStorm(ctx context.Context, cfg ClusterConfig, side string, trial int) ClusterMeasurement {
	return measureIn(ctx, cfg, ClusterMeasurement{Case: CaseClusterStorm, Side: side, Run: trial}, func(ctx context.Context, e *env) error {
		p := load.ClusterStormParams{StormParams: cfg.Params.Storm, Victim: (trial - 1) % cfg.Nodes, Groups: cfg.Nodes}
		p.Credentials = cfg.credentials()
		p.JWTSecret, p.CacheSeries = cfg.JWTSecret, jwtCacheHits
		var n load.Nodes
		if side == SideCluster {
			cl, stop, err := e.cluster(ctx)
			if err != nil {
				return err
			}
			defer stop()
			n = cl.Load()
		} else {
			proc, stop, err := e.single(ctx)
			if err != nil {
				return err
			}
			defer stop()
			n = load.Nodes{Servers: []load.Server{proc.Server()}}
		}
		r, err := load.ClusterStorm(ctx, n, p)
		if r == nil {
			return err
		}
		return e.checked(ctx, r, err)
	})
}

// newSchema makes a fresh, empty schema in the database at base and
// returns a DSN whose search_path is it (everything the server creates
// lands there), and a func that drops it.
func newSchema(ctx context.Context, base string) (string, func(), error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "bench_" + hex.EncodeToString(b[:])
	if err := execSQL(ctx, base, "CREATE SCHEMA "+schema); err != nil {
		return "", nil, fmt.Errorf("create a schema for the measurement: %w", err)
	}
	u, _ := url.Parse(base) // checked by ClusterConfig.check
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	drop := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = execSQL(dctx, base, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	}
	return u.String(), drop, nil
}

func execSQL(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// storeGaps counts the conversations whose events rows are not exactly
// seq 1..max(seq): a gap, since (conversation, seq) is the primary key.
func storeGaps(ctx context.Context, dsn string) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("check the store: %w", err)
	}
	defer conn.Close(context.Background())
	var gaps int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT conversation_id FROM events GROUP BY conversation_id HAVING count(*) <> max(seq)) g`).Scan(&gaps)
	if err != nil {
		return 0, fmt.Errorf("check the store: %w", err)
	}
	return gaps, nil
}

// PostgresVersion reads the server_version of the PostgreSQL at dsn.
func PostgresVersion(ctx context.Context, dsn string) (string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, "SHOW server_version").Scan(&v)
	return v, err
}
