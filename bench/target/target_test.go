package target

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS([]byte("Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t   2048 kB\nThreads: 3\n"))
	if err != nil || got != 2048<<10 {
		t.Errorf("parseVmRSS = %d, %v; want %d", got, err, 2048<<10)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("parseVmRSS without VmRSS: want an error")
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
	if n, err := p.RSS(); err != nil || n <= 0 {
		t.Errorf("RSS = %d, %v", n, err)
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
	if cfg := agentServerConfig(Spec{Key: "k"}, "/p"); strings.Contains(cfg, "chains") || strings.Contains(cfg, "instances") {
		t.Errorf("without a JWT secret the default chain must stay:\n%s", cfg)
	}
}
