package e2e

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-server/agent-server/tests/testcert"
)

// calls counts a service's calls per credential.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[k]++
}

func (c *calls) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

// The webhook plugin against a Kubernetes TokenReview service and a
// forward-auth service (over TLS, with a client certificate), two
// instances of one binary in one chain.
func TestWebhook(t *testing.T) {
	const (
		good     = "tr-good-Zq81xW"
		bad      = "tr-bad-Lp02Ye"
		slow     = "tr-slow-Mn55Qa"
		broken   = "tr-broken-Kx19Ba"
		team     = "team-good-Vb37Rt"
		outsider = "team-bad-Hu64Pe"
	)
	var conv string // set below, before any call
	var trCalls, fwdCalls calls
	review := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var tr struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Spec       struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil || tr.Kind != "TokenReview" || tr.APIVersion != "authentication.k8s.io/v1" {
			http.Error(w, "not a TokenReview", http.StatusBadRequest)
			return
		}
		trCalls.add(tr.Spec.Token)
		status := map[string]any{"authenticated": false}
		switch tr.Spec.Token {
		case good:
			status = map[string]any{"authenticated": true, "user": map[string]any{"username": "alice", "extra": map[string][]string{"conversations": {conv}}}}
		case slow:
			time.Sleep(time.Second)
		case broken:
			http.Error(w, "the token store is down", http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
	}))
	t.Cleanup(review.Close)

	dir := t.TempDir()
	serviceCA, clientCA := testcert.NewCA(t, "service-ca"), testcert.NewCA(t, "webhook-clients")
	forward := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("X-Team-Token")
		fwdCalls.add(tok)
		if tok != team || r.Header.Get("X-Forwarded-Uri") != "/sockets/events/"+conv {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Auth-Request-User", "team-a")
		w.Header().Set("Cache-Control", "max-age=60")
	}))
	forward.TLS = &tls.Config{Certificates: []tls.Certificate{serviceCA.Server(t).TLS()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCA.Pool()}
	forward.StartTLS()
	t.Cleanup(forward.Close)
	certFile, keyFile := clientCA.Issue(t, testcert.Spec{CommonName: "agent-server", Client: true}).Write(t, dir, "webhook-client")

	bin := filepath.Join(binDir, "plugins", "auth-webhook")
	s := startServer(t, keyCfg()+`  chains:
    events: [tokenreview, forward]
    rest: [header, bearer]
plugins:
  instances:
    tokenreview:
      path: `+bin+`
      config: {url: "`+review.URL+`", mode: tokenreview, allow_insecure_url: true, timeout: 300ms}
    forward:
      path: `+bin+`
      config:
        url: "`+forward.URL+`"
        mode: forward
        headers: [X-Team-Token]
        ca_file: `+serviceCA.WriteCA(t, dir, "service-ca.pem")+`
        client_cert_file: `+certFile+`
        client_key_file: `+keyFile+`
log:
  level: debug
`)
	conv = s.createConversation(t, key)
	other := s.createConversation(t, key)
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	try := func(id string, h http.Header) int {
		t.Helper()
		c, resp, err := s.dial(t, "/sockets/events/"+id, h)
		if err != nil {
			return status(resp)
		}
		mustReady(t, c)
		c.Close()
		return 101
	}
	for _, tc := range []struct {
		name string
		conv string
		h    http.Header
		want int
	}{
		{"TokenReview allows, scoped to its conversation", conv, bearer(good), 101},
		{"TokenReview scopes exclude another conversation", other, bearer(good), 403},
		{"TokenReview denies", conv, bearer(bad), 401},
		{"TokenReview times out: fail closed", conv, bearer(slow), 503},
		{"TokenReview answers 500: fail closed", conv, bearer(broken), 503},
		{"forward-auth over TLS allows", conv, http.Header{"X-Team-Token": {team}}, 101},
		{"forward-auth denies", conv, http.Header{"X-Team-Token": {outsider}}, 401},
	} {
		if got := try(tc.conv, tc.h); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	// Repeats within the TTL are answered from the host's cache.
	if got := try(conv, bearer(good)); got != 101 {
		t.Errorf("repeated TokenReview token: %d", got)
	}
	if got := try(conv, http.Header{"X-Team-Token": {team}}); got != 101 {
		t.Errorf("repeated team token: %d", got)
	}
	if n := trCalls.get(good); n != 1 {
		t.Errorf("the TokenReview service was called %d times for one token within the TTL, want 1", n)
	}
	if n := fwdCalls.get(team); n != 1 {
		t.Errorf("the forward-auth service was called %d times for one token within the TTL, want 1", n)
	}
	// Errors are never cached: the slow token asks again.
	try(conv, bearer(slow))
	if n := trCalls.get(slow); n != 2 {
		t.Errorf("a timed-out token was asked %d times, want 2 (errors are not cached)", n)
	}
	log := s.Log()
	for _, secret := range []string{good, bad, slow, broken, team, outsider} {
		if strings.Contains(log, secret) {
			t.Errorf("credential %s reached the server log", secret)
		}
	}
}
