package target

import (
	"slices"
	"strings"
	"testing"
)

// OnPostgres sets the driver and the DSN without touching the caller's
// environment slice.
func TestOnPostgres(t *testing.T) {
	env := make([]string, 1, 4)
	env[0] = "GOGC=200"
	base := Spec{Key: "k", Env: env}
	got := OnPostgres(base, "postgres://u@127.0.0.1:1/db")
	if got.Storage != "postgres" || !slices.Equal(got.Env, []string{"GOGC=200", "AGENT_SERVER_STORAGE__POSTGRES__DSN=postgres://u@127.0.0.1:1/db"}) {
		t.Errorf("OnPostgres = storage %q, env %q", got.Storage, got.Env)
	}
	if other := OnPostgres(base, "postgres://other"); strings.Contains(strings.Join(got.Env, " "), "other") || len(other.Env) != 2 {
		t.Errorf("a second OnPostgres changed the first one's environment: %q", got.Env)
	}
	if cfg := agentServerConfig(got, "/p"); !strings.Contains(cfg, "driver: \"postgres\"") {
		t.Errorf("config without the postgres driver:\n%s", cfg)
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Errorf("ports %v: want 5 distinct ports", ports)
		}
		seen[p] = true
	}
}
