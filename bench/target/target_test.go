package target

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/bench/load"
)

func TestParseStatus(t *testing.T) {
	got, err := parseStatus([]byte("Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t   2048 kB\nRssAnon:\t  1024 kB\nRssFile:\t 1024 kB\nThreads: 3\n"))
	if want := (load.Memory{RSS: 2048 << 10, Anon: 1024 << 10, File: 1024 << 10}); err != nil || got != want {
		t.Errorf("parseStatus = %+v, %v; want %+v", got, err, want)
	}
	if _, err := parseStatus([]byte("Name:\tx\nVmRSS:\t 1 kB\n")); err == nil {
		t.Error("parseStatus without RssAnon: want an error")
	}
}

func TestParseStat(t *testing.T) {
	// pid (comm with spaces) state ppid ... utime(14) stime(15)
	line := "42 (a b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0 1 1 1"
	cpu, ppid, err := parseStat([]byte(line))
	if err != nil || ppid != 7 || cpu != 3*time.Second {
		t.Errorf("parseStat = %v, %d, %v; want 3s, 7", cpu, ppid, err)
	}
}

// This process can read its own RSS and CPU the way a server's are read.
func TestSelfProbes(t *testing.T) {
	p := External(Baseline, "127.0.0.1:1", "k", os.Getpid())
	if m, err := p.Memory(); err != nil || m.RSS <= 0 || m.Anon <= 0 {
		t.Errorf("Memory = %+v, %v", m, err)
	}
	if _, err := p.CPU(); err != nil {
		t.Errorf("CPU: %v", err)
	}
}

func TestAgentServerConfig(t *testing.T) {
	cfg := agentServerConfig(Spec{Key: `k"ey`, SubscriberCap: 1008, JWTSecret: "s"}, "/p")
	for _, want := range []string{
		`keys: ["k\"ey"]`, "failures_per_minute: 0", "events: [query, header, jwt, bearer]",
		`dir: "/p"`, `secret: "s"`, "messages_per_second: 0", "subscribers_per_conversation: 1008",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if cfg := agentServerConfig(Spec{Key: "k"}, "/p"); strings.Contains(cfg, "chains") || strings.Contains(cfg, "instances") || strings.Contains(cfg, "storage") {
		t.Errorf("without a JWT secret or a driver the defaults must stay:\n%s", cfg)
	}
	if cfg := agentServerConfig(Spec{Key: "k", Storage: "memory"}, "/p"); !strings.Contains(cfg, "storage:\n  driver: \"memory\"") {
		t.Errorf("storage driver missing:\n%s", cfg)
	}
	if cfg := agentServerConfig(Spec{Key: "k"}, "/p"); strings.Contains(cfg, "metrics") || strings.Contains(cfg, "admin") {
		t.Errorf("agent-server keeps its metrics and admin defaults:\n%s", cfg)
	}
	if cfg := agentServerConfig(Spec{Kind: AgentServerNoMetrics, Key: "k", Pprof: true}, "/p"); !strings.Contains(cfg, "metrics:\n  enabled: false") || !strings.Contains(cfg, "admin:\n  pprof: true") {
		t.Errorf("metrics off or pprof missing:\n%s", cfg)
	}
}

func TestSeriesValue(t *testing.T) {
	exp := []byte("# HELP agent_server_auth_cache_hits_total x\n# TYPE agent_server_auth_cache_hits_total counter\n" +
		"agent_server_auth_cache_hits_total{plugin=\"jwt\"} 12\n" +
		"agent_server_auth_cache_hits_total{plugin=\"jwt2\"} 99\n" +
		"agent_server_auth_cache_hits_total{plugin=\"query\"} 3.5e+06\n")
	tests := []struct {
		series string
		want   float64
	}{
		{`agent_server_auth_cache_hits_total{plugin="jwt"}`, 12},
		{`agent_server_auth_cache_hits_total{plugin="query"}`, 3.5e6},
		{`agent_server_auth_cache_hits_total{plugin="header"}`, 0},
	}
	for _, tt := range tests {
		if got, err := seriesValue(exp, tt.series); err != nil || got != tt.want {
			t.Errorf("seriesValue(%s) = %v, %v; want %v", tt.series, got, err, tt.want)
		}
	}
	if _, err := seriesValue([]byte("m{a=\"b\"} nope\n"), `m{a="b"}`); err == nil {
		t.Error("an unreadable value: want an error")
	}
}
