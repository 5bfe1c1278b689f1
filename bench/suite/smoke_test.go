package suite

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-server/agent-server/bench/load"
	"github.com/agent-server/agent-server/bench/target"
)

// build compiles the real binaries, as `go tool task build` does: the
// server, agent-bench, and every plugin under cmd/auth-*.
func build(dir string) error {
	targets := map[string]string{
		"agent-server": "../../cmd/agent-server",
		"agent-bench":  "../../cmd/agent-bench",
	}
	plugins, err := filepath.Glob("../../cmd/auth-*")
	if err != nil {
		return err
	}
	for _, p := range plugins {
		targets["plugins/"+filepath.Base(p)] = p
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(targets))
	for out, pkg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
			if b, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Every case runs against the real agent-server (with its plugin processes)
// and the baseline, and counts exactly: nothing lost, nothing duplicated,
// no error. Speed is not asserted.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dozen server processes")
	}
	binDir := t.TempDir()
	if err := build(binDir); err != nil {
		t.Fatalf("build binaries: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := Tiny()
	cfg := Config{
		Cases:       Cases,
		Targets:     []target.Kind{target.AgentServer, target.Baseline},
		Runs:        1,
		Params:      p,
		Key:         "smoke-key+/=with-odd-chars",
		JWTSecret:   "a-smoke-test-hs256-secret-of-32-bytes",
		ServerBin:   filepath.Join(binDir, "agent-server"),
		PluginDir:   filepath.Join(binDir, "plugins"),
		BaselineCmd: []string{filepath.Join(binDir, "agent-bench"), "baseline"},
		ObserverCmd: []string{filepath.Join(binDir, "agent-bench"), "observe"},
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(rep.Measurements), len(Cases)*2; got != want {
		t.Fatalf("%d measurements, want %d", got, want)
	}
	for _, m := range rep.Measurements {
		t.Run(m.Case+"/"+string(m.Target), func(t *testing.T) {
			if m.Err != "" {
				t.Fatalf("failed: %s", m.Err)
			}
			check(t, m.Case, p, m.Result)
		})
	}
	var md strings.Builder
	rep.Markdown(&md)
	for _, c := range Cases {
		if !strings.Contains(md.String(), "| "+c+":") {
			t.Errorf("markdown table has no row for %s:\n%s", c, md.String())
		}
	}
}

// check asserts a result's counts.
func check(t *testing.T, c string, p Params, res any) {
	t.Helper()
	switch r := res.(type) {
	case *load.ConnectResult:
		want := p.ConnectN
		if c == CaseConnectJWT {
			want = p.JWTN
		}
		if r.Attempts != want || r.OK != want || r.Errors != 0 || r.TimeToReady.Count != want {
			t.Errorf("attempts %d, ok %d, errors %d %v; want %d ok, no errors", r.Attempts, r.OK, r.Errors, r.FirstErrors, want)
		}
	case *load.FanoutResult:
		msgs := p.Msgs
		if c == CaseFanoutPaced {
			msgs = p.PacedMsgs
		}
		want := p.Subs * msgs
		if r.Expected != want || r.Delivered != want || r.Lost != 0 || r.Duplicates != 0 || r.Errors != 0 || r.Latency.Count != want {
			t.Errorf("delivered %d of %d, lost %d, duplicates %d, errors %d %v; want all delivered once", r.Delivered, want, r.Lost, r.Duplicates, r.Errors, r.FirstErrors)
		}
	case *load.IdleResult:
		if r.Ready != p.IdleN || r.Held != p.IdleN || r.Errors != 0 || r.Before.RSS <= 0 || r.After.Anon <= 0 {
			t.Errorf("ready %d, held %d, errors %d %v, memory %+v -> %+v; want %d held and memory read", r.Ready, r.Held, r.Errors, r.FirstErrors, r.Before, r.After, p.IdleN)
		}
	case *load.ChurnResult:
		want := int(p.ChurnRate * p.ChurnDuration.Seconds())
		if r.Attempts != want || r.OK != want || r.Errors != 0 || r.Start.RSS <= 0 || r.Start.Anon <= 0 {
			t.Errorf("attempts %d, ok %d, errors %d %v, start memory %+v; want %d clean cycles", r.Attempts, r.OK, r.Errors, r.FirstErrors, r.Start, want)
		}
	case *load.StormResult:
		want := p.Storm.N
		if r.Clients != want || r.Resumed != want || r.Resume.Count != want || r.Posted == 0 || r.Expected == 0 ||
			r.Delivered != r.Expected || r.Lost != 0 || r.Duplicates != 0 || r.Errors != 0 || r.Quiet.Count == 0 {
			t.Errorf("resumed %d of %d, delivered %d of %d (%d posted), lost %d, duplicates %d, errors %v %v, quiet samples %d; want all resumed, all delivered once",
				r.Resumed, want, r.Delivered, r.Expected, r.Posted, r.Lost, r.Duplicates, r.ErrorsByKind, r.FirstErrors, r.Quiet.Count)
		}
	default:
		t.Errorf("result %T", res)
	}
}
