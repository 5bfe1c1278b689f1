package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SIGTERM with a handshake held in its authentication (the webhook's
// service never answers) and a socket open: the drain of the handshakes
// takes at most half of server.shutdown_timeout, then cuts the held one,
// and the actors' shutdown has the rest, so the open socket is closed with
// 1001. The server is shut down once, and the error it exits with is that
// shutdown's, naming the drain, once, and no step out of time after it.
// Before, Serve's own shutdown and run's second one each drained for the
// whole timeout, the first one's error was dropped, and the actors were
// left no time.
func TestShutdownWithAHandshakeInFlight(t *testing.T) {
	const (
		open = "open-token-Rw83Kd"
		held = "held-token-Jp27Xs"
	)
	var conv string // set below, before any call
	entered := make(chan struct{}, 1)
	review := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var tr struct {
			Spec struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, "not a TokenReview", http.StatusBadRequest)
			return
		}
		if tr.Spec.Token == held {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-r.Context().Done() // until the server gives up on it
			return
		}
		status := map[string]any{"authenticated": tr.Spec.Token == open, "user": map[string]any{"username": "alice", "extra": map[string][]string{"conversations": {conv}}}}
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
	}))
	t.Cleanup(review.Close)
	s := startServer(t, keyCfg()+`  chains:
    events: [tokenreview]
plugins:
  instances:
    tokenreview:
      path: `+filepath.Join(binDir, "plugins", "auth-webhook")+`
      config: {url: "`+review.URL+`", mode: tokenreview, allow_insecure_url: true, timeout: 60s}
server:
  shutdown_timeout: 2s
`, "AGENT_SERVER_AUTH__RPC_TIMEOUT=60s")
	conv = s.createConversation(t, key)
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	c, _, err := s.dial(t, "/sockets/events/"+conv, bearer(open))
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, c)
	closed := make(chan int, 1)
	go func() {
		code, _, _ := awaitClose(c, 30*time.Second)
		closed <- code
	}()
	refused := make(chan error, 1)
	go func() {
		_, _, err := s.dial(t, "/sockets/events/"+conv, bearer(held))
		refused <- err
	}()
	<-entered
	if err := s.stop(30 * time.Second); err == nil || strings.Contains(err.Error(), "still running") {
		t.Fatalf("exit: %v, want the shutdown's error\n%s", err, s.Log())
	}
	if code := <-closed; code != 1001 {
		t.Errorf("open socket closed with %d, want 1001\n%s", code, s.Log())
	}
	if err := <-refused; err == nil {
		t.Error("the held handshake was upgraded after its cut")
	}
	log := s.Log()
	const drained = "drain handshakes: closed 1 still in flight after "
	if n := strings.Count(log, drained); n != 1 {
		t.Errorf("the log names the drain's cut %d times, want once\n%s", n, log)
	}
	for _, late := range []string{"shut down actors", "close websockets", "wait for the shutdown"} {
		if strings.Contains(log, late) {
			t.Errorf("the log has %q: a step after the drain ran out of time\n%s", late, log)
		}
	}
}
