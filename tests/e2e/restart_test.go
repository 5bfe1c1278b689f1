package e2e

import "testing"

// restart starts a new agent-server process on s's config file, in s's
// directory, with s's environment, so it opens the same data (the default
// storage.path is relative to that directory). s must have exited.
func (s *server) restart(t *testing.T) *server {
	t.Helper()
	select {
	case <-s.exited:
	default:
		t.Fatal("restart: the old server is still running")
	}
	return launch(t, s.config, s.cmd.Env)
}
