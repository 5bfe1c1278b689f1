// Package suite runs agent-bench's benchmark: every selected case against
// every selected server, one after the other, for a number of runs, and
// reports medians, spreads and ours/baseline ratios against the targets of
// the benchmark issue.
//
// Each (run, case, server) gets a fresh server process, so no measurement
// inherits another's memory or caches. Within a run the servers take turns
// case by case, so slow drift on a shared machine touches both alike.
package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/bench/target"
)

// The cases, in the order they run and are reported.
const (
	CaseConnect     = "connect"      // cached: one key for every connection
	CaseConnectJWT  = "connect-jwt"  // uncached: a distinct JWT per connection through the jwt plugin
	CaseReject      = "reject"       // a wrong key: rejections per second
	CaseFanout      = "fanout"       // back to back
	CaseFanoutPaced = "fanout-paced" // at Params.PacedRate
	CaseIdle        = "idle"
	CaseChurn       = "churn"
	// CaseStorm: StormN clients with a distinct JWT each drop their sockets
	// at once and resume with after_id (load.Storm).
	CaseStorm = "reconnect-storm"
)

// Cases lists every case name in order.
var Cases = []string{CaseConnect, CaseConnectJWT, CaseReject, CaseFanout, CaseFanoutPaced, CaseIdle, CaseChurn, CaseStorm}

// Params are the knobs of every case.
type Params struct {
	Auth load.Auth // credential placement for every case but connect-jwt

	ConnectN, ConnectC int // connect and reject
	JWTN               int // connect-jwt (same concurrency)

	Subs, Msgs, Size int
	PacedRate        float64 // messages per second in fanout-paced
	PacedMsgs        int
	FanoutC          int // subscribers joining at once

	IdleN, IdleC, IdlePerConv int
	IdleHold                  time.Duration

	ChurnRate     float64
	ChurnDuration time.Duration
	ChurnC        int
	ChurnSettle   time.Duration

	// Storm is the reconnect storm's; its Credentials are set per run.
	Storm load.StormParams
}

// Defaults are the parameters of the committed benchmark.
func Defaults() Params {
	return Params{
		Auth:     load.AuthQuery,
		ConnectN: 10000, ConnectC: 50, JWTN: 5000,
		Subs: 1000, Msgs: 2000, Size: 256, PacedRate: 100, PacedMsgs: 500, FanoutC: 50,
		IdleN: 10000, IdleC: 100, IdlePerConv: 100, IdleHold: 10 * time.Second,
		ChurnRate: 100, ChurnDuration: 5 * time.Minute, ChurnC: 50, ChurnSettle: 60 * time.Second,
		Storm: load.StormParams{}.WithDefaults(),
	}
}

// Tiny are parameters for a smoke run: every case in about a second.
func Tiny() Params {
	return Params{
		Auth:     load.AuthQuery,
		ConnectN: 20, ConnectC: 4, JWTN: 10,
		Subs: 5, Msgs: 20, Size: 100, PacedRate: 200, PacedMsgs: 10, FanoutC: 5,
		IdleN: 20, IdleC: 10, IdlePerConv: 8, IdleHold: 200 * time.Millisecond,
		ChurnRate: 40, ChurnDuration: time.Second, ChurnC: 8, ChurnSettle: time.Second,
		Storm: load.StormParams{
			N: 40, PerConversation: 10, Concurrency: 8, Rate: 20, Jitter: 200 * time.Millisecond,
			Hold: 300 * time.Millisecond, QuietSubs: 5, QuietRate: 50, QuietWindow: 300 * time.Millisecond,
			Tail: 200 * time.Millisecond, Timeout: 20 * time.Second, Size: 100,
		},
	}
}

// Config is one benchmark.
type Config struct {
	Cases   []string
	Targets []target.Kind
	Runs    int
	Params  Params

	Key       string // session API key; both servers accept it
	JWTSecret string // HS256 secret for connect-jwt (at least 32 bytes)

	ServerBin   string   // agent-server binary
	PluginDir   string   // its plugins
	BaselineCmd []string // serves the baseline (agent-bench baseline)
	ObserverCmd []string // runs the storm's paced fan-out (agent-bench observe); empty: in this process
	ServerCPUs  string   // taskset -c list for the servers; empty for none
	ServerEnv   []string // extra KEY=VALUE environment for the servers (GOGC, ...)
	Storage     string   // agent-server's storage.driver; empty keeps its default
	// Pprof serves agent-server's profiles on its admin listener
	// (admin.pprof); Progress names the address of each server started.
	Pprof bool

	// External, when set, is the one server to use instead of starting
	// any; Targets must then be its kind alone.
	External *target.Process

	Progress io.Writer // one line per measurement; nil for none
}

// Measurement is one case against one server in one run.
type Measurement struct {
	Case   string        `json:"case"`
	Target target.Kind   `json:"target"`
	Run    int           `json:"run"`
	Result any           `json:"result,omitempty"` // the scenario's result
	Err    string        `json:"error,omitempty"`
	Took   time.Duration `json:"took"`

	ServerErrorLines int      `json:"server_error_lines"` // stderr lines at level ERROR
	metrics          []metric // derived from Result
}

// Run runs the benchmark and returns every measurement. A case that fails
// is recorded with its error and the run goes on; Run itself fails only on
// a bad config or when ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	rep := &Report{Config: cfg, Started: time.Now()}
	for run := 1; run <= cfg.Runs; run++ {
		for _, c := range cfg.Cases {
			for _, k := range cfg.Targets {
				if err := ctx.Err(); err != nil {
					return rep, err
				}
				m := measure(ctx, cfg, c, k, run)
				rep.Measurements = append(rep.Measurements, m)
				if cfg.Progress != nil {
					fmt.Fprintln(cfg.Progress, m.line())
				}
			}
		}
	}
	rep.Finished = time.Now()
	return rep, ctx.Err()
}

func (cfg *Config) check() error {
	if cfg.Runs < 1 {
		return errors.New("runs must be at least 1")
	}
	if len(cfg.Targets) == 0 || len(cfg.Cases) == 0 {
		return errors.New("at least one target and one case")
	}
	for _, c := range cfg.Cases {
		if !slices.Contains(Cases, c) {
			return fmt.Errorf("unknown case %q; cases: %s", c, strings.Join(Cases, ", "))
		}
		if (c == CaseConnectJWT || c == CaseStorm) && len(cfg.JWTSecret) < 32 {
			return fmt.Errorf("%s needs a JWT secret of at least 32 bytes", c)
		}
	}
	if cfg.External != nil && (len(cfg.Targets) != 1 || cfg.Targets[0] != cfg.External.Kind) {
		return errors.New("an external server is the only target")
	}
	if cfg.Key == "" {
		return errors.New("a key is required")
	}
	return nil
}

// measure starts a fresh server, runs one case against it and stops it.
func measure(ctx context.Context, cfg Config, c string, k target.Kind, run int) (m Measurement) {
	m = Measurement{Case: c, Target: k, Run: run}
	start := time.Now()
	defer func() { m.Took = time.Since(start) }()

	p := cfg.Params
	proc := cfg.External
	if proc == nil {
		spec := target.Spec{
			Kind: k, Key: cfg.Key,
			ServerBin: cfg.ServerBin, PluginDir: cfg.PluginDir,
			SubscriberCap: max(p.Subs, p.IdlePerConv, p.Storm.PerConversation, p.Storm.QuietSubs, 50) + 8,
			BaselineCmd:   cfg.BaselineCmd,
			CPUs:          cfg.ServerCPUs,
			Env:           cfg.ServerEnv,
			Storage:       cfg.Storage,
			Pprof:         cfg.Pprof,
		}
		if c == CaseConnectJWT || c == CaseStorm {
			spec.JWTSecret = cfg.JWTSecret
		}
		var err error
		if proc, err = target.Start(ctx, spec); err != nil {
			m.Err = err.Error()
			return m
		}
		if cfg.Pprof && cfg.Progress != nil && proc.AdminAddr() != "" {
			fmt.Fprintf(cfg.Progress, "%s %s: profiles at http://%s/debug/pprof/ (go tool pprof http://%s/debug/pprof/profile)\n", c, k, proc.AdminAddr(), proc.AdminAddr())
		}
		defer func() {
			m.ServerErrorLines = proc.ErrorLines()
			if err := proc.Stop(); err != nil && m.Err == "" {
				m.Err = err.Error()
			}
		}()
	}
	srv := proc.Server()
	creds := load.Credentials{Auth: p.Auth, Key: cfg.Key, JWTSecret: cfg.JWTSecret}

	var res any
	var err error
	switch c {
	case CaseConnect, CaseReject:
		res, err = load.Connect(ctx, srv, load.ConnectParams{Credentials: creds, N: p.ConnectN, Concurrency: p.ConnectC, WrongKey: c == CaseReject})
	case CaseConnectJWT:
		creds.Auth = load.AuthJWT
		res, err = load.Connect(ctx, srv, load.ConnectParams{Credentials: creds, N: p.JWTN, Concurrency: p.ConnectC})
	case CaseFanout:
		res, err = load.Fanout(ctx, srv, load.FanoutParams{Credentials: creds, Subscribers: p.Subs, Messages: p.Msgs, Size: p.Size, Concurrency: p.FanoutC})
	case CaseFanoutPaced:
		res, err = load.Fanout(ctx, srv, load.FanoutParams{Credentials: creds, Subscribers: p.Subs, Messages: p.PacedMsgs, Size: p.Size, Rate: p.PacedRate, Concurrency: p.FanoutC})
	case CaseIdle:
		res, err = load.Idle(ctx, srv, load.IdleParams{Credentials: creds, N: p.IdleN, Concurrency: p.IdleC, PerConversation: p.IdlePerConv, Hold: p.IdleHold})
	case CaseChurn:
		res, err = load.Churn(ctx, srv, load.ChurnParams{Credentials: creds, Rate: p.ChurnRate, Duration: p.ChurnDuration, Concurrency: p.ChurnC, Settle: p.ChurnSettle, Size: p.Size})
	case CaseStorm:
		sp := p.Storm
		sp.Credentials = creds
		sp.CacheSeries = jwtCacheHits
		sp.Observer = cfg.ObserverCmd
		res, err = load.Storm(ctx, srv, sp)
	}
	if err != nil {
		m.Err = err.Error()
	}
	if err == nil || !isNil(res) {
		m.Result = res
	}
	return m
}

// jwtCacheHits is agent-server's series of decision-cache hits for the
// jwt plugin, which the storm clients authenticate with.
const jwtCacheHits = `agent_server_auth_cache_hits_total{plugin="jwt"}`

// isNil reports whether a scenario returned a nil result pointer.
func isNil(res any) bool {
	switch r := res.(type) {
	case *load.ConnectResult:
		return r == nil
	case *load.FanoutResult:
		return r == nil
	case *load.IdleResult:
		return r == nil
	case *load.ChurnResult:
		return r == nil
	case *load.StormResult:
		return r == nil
	}
	return true
}
