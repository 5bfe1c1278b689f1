package plugins_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
)

// BenchmarkProcessMemory measures what one more process of a plugin costs
// (plugins.processes: 2 runs a standby): each case starts the plugin with
// two processes, authenticates b.N requests through it, and reports per
// process, from /proc: VmRSS, RssAnon (memory private to the process: its
// heap and stacks, what a standby adds) and Pss (its share of every page
// it maps; the binary's pages are shared by its processes), and, for oidc,
// the JWKS fetches the identity provider saw (each process keeps and
// fetches its own keys).
func BenchmarkProcessMemory(b *testing.B) {
	idp := newIDPStub(b)
	for _, tc := range []struct {
		name  string
		chain []string
		inst  map[string]config.Plugin
		req   func(k int) *core.Request
	}{
		{"header", []string{"header"}, nil, func(int) *core.Request { return request("", "X-Session-API-Key", validKey) }},
		{"jwt", []string{"jwt"}, map[string]config.Plugin{"jwt": {Config: map[string]any{"secret": hsSecret}}},
			func(k int) *core.Request {
				return request("", "Authorization", "Bearer "+hs256(b, hsSecret, strconv.Itoa(k)))
			}},
		{"oidc", []string{"oidc"}, map[string]config.Plugin{"oidc": {Config: idp.config()}},
			func(k int) *core.Request {
				return request("", "Authorization", "Bearer "+idp.token(b, strconv.Itoa(k), nil))
			}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := config.Default()
			cfg.Auth.Keys = []string{validKey}
			cfg.Auth.Cache.Enabled = false
			cfg.Plugins.Dir = binDir
			cfg.Plugins.Processes = 2
			cfg.Auth.Chains = config.Chains{Events: tc.chain, REST: tc.chain, Runtime: tc.chain}
			cfg.Plugins.Instances = tc.inst
			fetches := idp.hits.Load()
			h := plugins.NewHost(cfg, nil)
			if err := h.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			c, err := h.Chain(core.RouteEvents)
			if err != nil {
				b.Fatal(err)
			}
			reqs := make([]*core.Request, b.N)
			for k := range reqs {
				reqs[k] = tc.req(k)
			}
			b.ResetTimer()
			for _, req := range reqs {
				if res := c.Authenticate(context.Background(), req); res.Decision != core.Allow {
					b.Fatalf("got %s (%v)", res.Decision, res.Err)
				}
			}
			b.StopTimer()
			for _, p := range h.Health()[0].Processes {
				role := "serving"
				if p.Index > 0 {
					role = "standby"
				}
				b.ReportMetric(float64(statusKiB(b, p.PID, "status", "VmRSS:")), role+"-VmRSS-KiB")
				b.ReportMetric(float64(statusKiB(b, p.PID, "status", "RssAnon:")), role+"-RssAnon-KiB")
				b.ReportMetric(float64(statusKiB(b, p.PID, "smaps_rollup", "Pss:")), role+"-Pss-KiB")
			}
			if tc.name == "oidc" {
				b.ReportMetric(float64(idp.hits.Load()-fetches), "jwks-fetches")
			}
		})
	}
}

// statusKiB reads the kB value of field from /proc/PID/file.
func statusKiB(b *testing.B, pid int, file, field string) int {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		b.Skipf("no /proc to read a plugin's memory from: %v", err)
	}
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/%s", field, pid, file)
	return 0
}
