package suite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// Cluster and single-node runs give medians, cluster/single ratios run by
// run and the cluster issue's targets; recovery trials a median and a
// worst over the trials.
func TestClusterMarkdown(t *testing.T) {
	conn := func(rate float64) *load.ConnectResult {
		return &load.ConnectResult{Attempts: 10, OK: 10, PerSecond: rate, Elapsed: time.Second, TimeToReady: load.Summary{Count: 10, P50: time.Millisecond, P99: 2 * time.Millisecond}}
	}
	fan := func(rate float64, reordered int) *load.FanoutResult {
		return &load.FanoutResult{Subscribers: 3, Messages: 2, Expected: 6, Delivered: 6, PerSecond: rate, Reordered: reordered, Elapsed: time.Second}
	}
	rec := func(d time.Duration, lost int) *load.RecoveryResult {
		return &load.RecoveryResult{Recovery: d, Acknowledged: d - time.Second, Lost: lost, Posts: 100}
	}
	storm := func(all time.Duration, resumed, dups int, hits float64) *load.ClusterStormResult {
		return &load.ClusterStormResult{
			StormResult: load.StormResult{Clients: 30, Resumed: resumed, AllResumed: all, Duplicates: dups, CacheHits: hits,
				Resume: load.Summary{Count: resumed, P50: all / 2, P99: all}, ErrorsByKind: map[string]int{"http": 2}},
			Dropped: 10, VictimOwned: 1, ReconnectsPerSecond: 10 / all.Seconds(),
		}
	}
	rep := &ClusterReport{
		Config: ClusterConfig{Nodes: 3, Runs: 2, Trials: 3, StormTrials: 2, Params: Tiny(), Recovery: load.RecoveryParams{}.WithDefaults()},
		Measurements: []ClusterMeasurement{
			{Case: CaseClusterFanout, Side: SideCluster, Run: 1, Result: fan(400, 0)},
			{Case: CaseClusterFanout, Side: SideSingle, Run: 1, Result: fan(1000, 0)},
			{Case: CaseClusterFanout, Side: SideSingle, Run: 2, Result: fan(1000, 0)},
			{Case: CaseClusterFanout, Side: SideCluster, Run: 2, Result: fan(600, 2)},
			{Case: CaseClusterConnect, Side: SideCluster, Run: 1, Result: conn(700)},
			{Case: CaseClusterConnect, Side: SideSingle, Run: 1, Result: conn(1000)},
			{Case: CaseRecovery, Side: SideCluster, Run: 1, Result: rec(3*time.Second, 0)},
			{Case: CaseRecovery, Side: SideCluster, Run: 2, Result: rec(5*time.Second, 0), StoreGaps: 1},
			{Case: CaseRecovery, Side: SideCluster, Run: 3, Result: rec(4*time.Second, 0)},
			{Case: CaseClusterStorm, Side: SideCluster, Run: 1, Result: storm(3*time.Second, 10, 0, 0)},
			{Case: CaseClusterStorm, Side: SideSingle, Run: 1, Result: storm(time.Second, 10, 0, 0)},
			{Case: CaseClusterStorm, Side: SideSingle, Run: 2, Result: storm(time.Second, 10, 0, 4)},
			{Case: CaseClusterStorm, Side: SideCluster, Run: 2, Result: storm(5*time.Second, 9, 1, 0)},
		},
	}
	var b strings.Builder
	rep.Markdown(&b)
	out := b.String()
	for _, want := range []string{
		"| cluster | single node | cluster/single |",
		"| delivered msgs/s | 500 [400-600] | 1,000 | 0.50x (0.40-0.60) | ratio >= 0.5x | met |",
		"| reordered (log order is not send order) | 1 [0-2] | 0 |  |  |  |",
		"| connects/s | 700 | 1,000 | 0.70x | ratio >= 0.8x | **missed** |",
		"| time to recovery | 4000 ms | 5000 ms | 3000, 5000, 4000 |  |  |",
		"| post through a survivor acknowledged | 3000 ms | 4000 ms | 2000, 4000, 3000 |  |  |",
		"| acknowledged posts lost | 0 | 0 | 0, 0, 0 | <= 0 | met |",
		"| conversations with rows != max(seq) | 0 | 1 | 0, 1, 0 | <= 0 | **missed** |",
		"3 trials, a fresh cluster each",
		"| cluster-storm: 40 clients, a distinct JWT each, spread over the 3 nodes,",
		"| clients not resumed | 1 [0-1] | 0 |  | <= 0 | **missed** |",
		"| time from the drop until all resumed | 3000 ms | 1000 ms | 3.00x | ",
		"| time to resume p99 | 4000 ms [3000-5000] | 1000 ms | 4.00x (3.00-5.00) |  |  |",
		"| lost + duplicated | 1 [0-1] | 0 |  | <= 0 | **missed** |",
		"| errors: http | 2 | 2 |  |  |  |",
		"| JWT cache hits on the reconnects | 0 | 2 [0-4] |  | <= 0 | met |",
		"| conversations the killed node owned | 1 | 1 |  |  |  |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func TestClusterConfigCheck(t *testing.T) {
	good := ClusterConfig{Cases: ClusterCases, Nodes: 3, Runs: 1, Trials: 1, StormTrials: 1, Key: "k", JWTSecret: strings.Repeat("s", 32), Params: Tiny(), PostgresDSN: "postgres://u@127.0.0.1:5432/db"}
	tests := []struct {
		name   string
		change func(*ClusterConfig)
		want   string // in the error; empty for none
	}{
		{"good", func(*ClusterConfig) {}, ""},
		{"one node", func(c *ClusterConfig) { c.Nodes = 1 }, "at least 2 nodes"},
		{"no trials", func(c *ClusterConfig) { c.Trials = 0 }, "trials"},
		{"no trials, no recovery", func(c *ClusterConfig) { c.Trials, c.Cases = 0, []string{CaseClusterConnect} }, ""},
		{"no storm trials", func(c *ClusterConfig) { c.StormTrials = 0 }, "storm trials"},
		{"no runs, trials only", func(c *ClusterConfig) { c.Runs, c.Cases = 0, []string{CaseRecovery, CaseClusterStorm} }, ""},
		{"no runs", func(c *ClusterConfig) { c.Runs = 0 }, "runs"},
		{"short JWT secret", func(c *ClusterConfig) { c.JWTSecret = "short" }, "JWT secret"},
		{"short JWT secret, no storm", func(c *ClusterConfig) { c.JWTSecret, c.Cases = "", []string{CaseRecovery} }, ""},
		{"unknown case", func(c *ClusterConfig) { c.Cases = []string{"fanout"} }, "unknown cluster case"},
		{"jwt", func(c *ClusterConfig) { c.Params.Auth = load.AuthJWT }, "not a JWT"},
		{"keyword DSN", func(c *ClusterConfig) { c.PostgresDSN = "host=127.0.0.1 dbname=db" }, "postgres:// URL"},
	}
	for _, tt := range tests {
		c := good
		tt.change(&c)
		err := c.check()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v, want no error", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

// Every cluster case runs against a real two-node cluster and a single
// node, on a real PostgreSQL, and counts exactly: nothing lost, nothing
// duplicated or reordered, no error; a recovery trial kills a node and
// finds every acknowledged post once in the log; a cluster storm kills a
// node, whose clients (and only those) all resume on the survivor with
// nothing cached for them, every client with every event once. Speed is
// not asserted.
func TestClusterSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL and a dozen server processes")
	}
	base := pgtest.DSN(t) // skips without PostgreSQL, except under CI=true
	binDir := t.TempDir()
	if err := build(binDir); err != nil {
		t.Fatalf("build binaries: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := Tiny()
	cfg := ClusterConfig{
		Cases: ClusterCases, Nodes: 2, Runs: 1, Trials: 1, StormTrials: 1, Params: p,
		HeartbeatExpiration: time.Second,
		Recovery: load.RecoveryParams{Conversations: 2, ReadersPerNode: 2, Writers: 2, Rate: 50,
			Warmup: 500 * time.Millisecond, After: 200 * time.Millisecond, Timeout: 30 * time.Second},
		Key:       "smoke-key+/=with-odd-chars",
		JWTSecret: "a-smoke-test-hs256-secret-of-32-bytes",
		ServerBin: filepath.Join(binDir, "agent-server"), PluginDir: filepath.Join(binDir, "plugins"),
		PostgresDSN: base,
	}
	rep, err := RunCluster(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(rep.Measurements), 3*2+1+2; got != want {
		t.Fatalf("%d measurements, want %d", got, want)
	}
	for _, m := range rep.Measurements {
		t.Run(m.Case+"/"+m.Side, func(t *testing.T) {
			if m.Err != "" {
				t.Fatalf("failed: %s\nserver errors: %v", m.Err, m.ServerErrors)
			}
			if m.Took <= 0 {
				t.Errorf("took %s", m.Took)
			}
			switch r := m.Result.(type) {
			case *load.RecoveryResult:
				if r.Lost != 0 || r.Duplicated != 0 || r.Mismatched != 0 || r.Errors != 0 || m.StoreGaps != 0 {
					t.Errorf("lost %d, duplicated %d, mismatched %d, store gaps %d, errors %d %v; want none", r.Lost, r.Duplicated, r.Mismatched, m.StoreGaps, r.Errors, r.FirstErrors)
				}
				if r.VictimOwned != 1 || r.Resumed != cfg.Recovery.Conversations*cfg.Recovery.ReadersPerNode || r.Recovery <= 0 || len(r.PerConversation) != 1 || r.Posts == 0 {
					t.Errorf("victim owned %d, resumed %d, recovery %s %v, posts %d; want 1 owned, %d resumed, a recovery and posts",
						r.VictimOwned, r.Resumed, r.Recovery, r.PerConversation, r.Posts, cfg.Recovery.Conversations*cfg.Recovery.ReadersPerNode)
				}
			case *load.ClusterStormResult:
				checkClusterStorm(t, m, cfg, r)
			case *load.FanoutResult:
				check(t, strings.TrimPrefix(m.Case, "cluster-"), p, r)
				if r.Reordered != 0 {
					t.Errorf("%d deliveries out of send order", r.Reordered)
				}
			default:
				check(t, CaseConnect, p, r)
			}
		})
	}
	var md strings.Builder
	rep.Markdown(&md)
	for _, c := range ClusterCases {
		if !strings.Contains(md.String(), c+":") {
			t.Errorf("markdown has no %s:\n%s", c, md.String())
		}
	}
}

// checkClusterStorm asserts a cluster storm trial's counts. The first
// trial's victim is node (or group) 0: clients 0, 2, 4, ... of the two.
func checkClusterStorm(t *testing.T, m ClusterMeasurement, cfg ClusterConfig, r *load.ClusterStormResult) {
	t.Helper()
	s := cfg.Params.Storm
	dropped, convs := s.N/cfg.Nodes, s.N/s.PerConversation
	if r.Dropped != dropped || r.Resumed != dropped || r.Resume.Count != dropped || r.Clients != s.N || r.Posted == 0 ||
		r.Expected != s.PerConversation*r.Posted || r.Lost != 0 || r.Duplicates != 0 || r.Reordered != 0 || m.StoreGaps != 0 {
		t.Errorf("dropped %d, resumed %d of %d clients, delivered %d of %d (%d posted), lost %d, duplicates %d, reordered %d, store gaps %d; want %d dropped and resumed, all delivered once, in order",
			r.Dropped, r.Resumed, r.Clients, r.Delivered, r.Expected, r.Posted, r.Lost, r.Duplicates, r.Reordered, m.StoreGaps, dropped)
	}
	// A refused or failed reconnect is retried (and reported); these are not.
	for _, k := range []string{"replay", "post", "closed"} {
		if r.ErrorsByKind[k] != 0 {
			t.Errorf("%d errors of kind %s %v, want none", r.ErrorsByKind[k], k, r.FirstErrors)
		}
	}
	if m.Side == SideSingle {
		// The drop came well within auth.cache.allow_ttl of the first
		// connects: the single node answers from its cache, which shows
		// the hits are read, and the cluster's zero is not a missing read.
		if r.Killed || r.VictimOwned != -1 || r.CacheHits <= 0 || r.ResumedOn[0] != dropped {
			t.Errorf("single node: killed %v, victim owned %d, cache hits %v, resumed on %v; want a drop, no owner, hits, all on group 0", r.Killed, r.VictimOwned, r.CacheHits, r.ResumedOn)
		}
		return
	}
	if !r.Killed || r.VictimOwned != convs/cfg.Nodes || r.CacheHits != 0 || len(r.ResumedOn) != 2 || r.ResumedOn[1] != dropped || r.ReconnectsPerSecond <= 0 {
		t.Errorf("cluster: killed %v, victim owned %d, cache hits %v, resumed on %v, reconnects/s %v; want a kill, %d owned, no hits, all on node 1",
			r.Killed, r.VictimOwned, r.CacheHits, r.ResumedOn, r.ReconnectsPerSecond, convs/cfg.Nodes)
	}
}

// Only ERROR lines are kept, the first maxErrorLines of them.
func TestErrorLines(t *testing.T) {
	var e errorLines
	e.see("time=1 level=INFO msg=x")
	for i := range maxErrorLines + 2 {
		e.see(fmt.Sprintf("time=%d level=ERROR msg=y", i))
	}
	got := e.lines()
	if len(got) != maxErrorLines || got[0] != "time=0 level=ERROR msg=y" {
		t.Errorf("kept %q, want the first %d ERROR lines", got, maxErrorLines)
	}
}

// Each node's lines go to a file of its own; no directory, no files.
func TestNodeLogs(t *testing.T) {
	dir := t.TempDir()
	see, closeLogs := nodeLogs(dir, "case-cluster-1")
	see(0, "zero")
	see(1, "one")
	see(0, "zero again")
	closeLogs()
	for file, want := range map[string]string{"case-cluster-1-node0.log": "zero\nzero again\n", "case-cluster-1-node1.log": "one\n"} {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", file, b, err, want)
		}
	}
	if see, closeLogs := nodeLogs("", "x"); see != nil {
		closeLogs()
		t.Error("nodeLogs without a directory returned a sink")
	}
}
