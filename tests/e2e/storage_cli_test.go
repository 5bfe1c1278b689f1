package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

// runBinary runs the server binary with args and exactly env (PATH added).
func runBinary(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "agent-server"), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// A single node moves to PostgreSQL: storage copy takes a stopped bolt
// server's file into the database (the DSN from the environment, so no
// password shows in ps), a server on PostgreSQL then serves the same
// conversations and events, and a rerun copies nothing twice.
func TestStorageCopyFromBoltToPostgres(t *testing.T) {
	s := startServer(t, keyCfg())
	var convs []string
	before := map[string][]event{}
	for i := range 3 {
		id := s.createConversation(t, key)
		convs = append(convs, id)
		for j := range 5 * i {
			if !postText(s, id, strings.Repeat("<&>", j)) {
				t.Fatal("post failed")
			}
		}
		before[id] = history(t, s, id, "?resend_all=true")
	}
	boltPath := filepath.Join(filepath.Dir(s.config), "data", "agent-server.db")
	// While the server holds the file, the copy refuses, saying why.
	dsn := withPassword(pgtest.DSN(t))
	env := []string{"AGENT_SERVER_STORAGE__POSTGRES__DSN=" + dsn}
	if out, code := runBinary(t, env, "storage", "copy", "--from", "bolt:"+boltPath, "--to", "postgres:"); code == 0 || !strings.Contains(out, "stop it first") {
		t.Errorf("copy from a running server's file: exit %d\n%s", code, out)
	}
	if err := s.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	out, code := runBinary(t, env, "storage", "copy", "--from", "bolt:"+boltPath, "--to", "postgres:")
	if code != 0 || !strings.Contains(out, "copied 3 conversations (3 new) and 15 events (0 already there)") {
		t.Fatalf("copy: exit %d\n%s", code, out)
	}
	if strings.Contains(out, pgPassword) {
		t.Errorf("the copy printed the password:\n%s", out)
	}
	out, code = runBinary(t, env, "storage", "copy", "--from", "bolt:"+boltPath, "--to", "postgres:")
	if code != 0 || !strings.Contains(out, "copied 3 conversations (0 new) and 0 events (15 already there)") {
		t.Fatalf("rerun: exit %d\n%s", code, out)
	}

	pg := startServer(t, keyCfg()+pgStorage(dsn))
	for _, id := range convs {
		after := history(t, pg, id, "?resend_all=true")
		if len(after) != len(before[id]) {
			t.Fatalf("conversation %s: %d events on postgres, %d on bolt", id, len(after), len(before[id]))
		}
		for i := range after {
			if after[i].ID != before[id][i].ID || after[i].Timestamp != before[id][i].Timestamp || after[i].text() != before[id][i].text() {
				t.Fatalf("conversation %s event %d: %+v on postgres, %+v on bolt", id, i, after[i], before[id][i])
			}
		}
	}
	if !postText(pg, convs[2], "continues") {
		t.Fatal("post on postgres failed")
	}
	if evs := history(t, pg, convs[2], "?resend_all=true"); len(evs) != 11 || evs[10].text() != "continues" {
		t.Fatalf("the log on postgres after a new post: %d events", len(evs))
	}
}

// storage migrate applies the schema without serving; run again, it
// changes nothing.
func TestStorageMigrate(t *testing.T) {
	dsn := withPassword(pgtest.DSN(t))
	for range 2 {
		out, code := runCLI(t, keyCfg()+pgStorage(dsn), nil, "storage", "migrate")
		if code != 0 || !strings.Contains(out, "postgres schema is at version 3") || strings.Contains(out, pgPassword) {
			t.Fatalf("storage migrate: exit %d\n%s", code, out)
		}
	}
	if out, code := runCLI(t, keyCfg(), nil, "storage", "migrate"); code == 0 || !strings.Contains(out, "storage.driver is \"bolt\"") {
		t.Errorf("storage migrate on bolt: exit %d\n%s", code, out)
	}
}
