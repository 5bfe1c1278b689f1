package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/tests/testcert"
)

// reviewer is a TokenReview webhook keyed by token.
func reviewer(t *testing.T, calls *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var review tokenReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || r.Method != http.MethodPost ||
			review.APIVersion != "authentication.k8s.io/v1" || review.Kind != "TokenReview" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("not a TokenReview: %s %+v (%v)", r.Method, review, err)
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		review.Status.Audiences = review.Spec.Audiences
		switch review.Spec.Token {
		case "good", "cached", "nostore":
			review.Status.Authenticated = true
			review.Status.User.Username = "alice"
			review.Status.User.UID = "u-1"
			review.Status.User.Groups = []string{"dev", "ops"}
			review.Status.User.Extra = map[string][]string{"conversations": {"c1", "c2"}}
			if review.Spec.Token == "cached" {
				w.Header().Set("Cache-Control", "private, max-age=3")
			}
			if review.Spec.Token == "nostore" {
				w.Header().Set("Cache-Control", "no-store")
			}
		case "nameless":
			review.Status.Authenticated = true
		case "other-audience":
			review.Status.Authenticated = true
			review.Status.User.Username = "alice"
			review.Status.Audiences = []string{"someone-else"}
		case "slow": // answers only once the plugin's own timeout ends the call
			<-r.Context().Done()
			return
		case "boom":
			http.Error(w, "internal: token boom", http.StatusInternalServerError)
			return
		case "forbidden":
			http.Error(w, "no", http.StatusForbidden)
			return
		case "garbage":
			_, _ = w.Write([]byte("<html>"))
			return
		}
		_ = json.NewEncoder(w).Encode(review)
	}
}

func configured(t *testing.T, cfg map[string]any) *Plugin {
	t.Helper()
	raw, _ := json.Marshal(cfg)
	p := New()
	if err := p.Configure(context.Background(), plugins.ConfigureRequest{Config: raw}); err != nil {
		t.Fatal(err)
	}
	return p
}

func bearerReq(tok string) *core.Request {
	return &core.Request{Method: "GET", Path: "/sockets/events/x", RemoteAddr: "192.0.2.7:5000", Header: http.Header{"Authorization": {"Bearer " + tok}}}
}

func TestTokenReview(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(reviewer(t, &calls))
	t.Cleanup(srv.Close)
	// A loaded machine must not turn a good answer into a timeout: the
	// table's plugin waits long, and only "slow" meets a short timeout.
	config := func(timeout string) map[string]any {
		return map[string]any{"url": srv.URL, "mode": "tokenreview", "allow_insecure_url": true, "timeout": timeout, "audiences": []string{"agent-server"}}
	}
	p, short := configured(t, config("30s")), configured(t, config("100ms"))
	tests := []struct {
		tok    string
		want   core.Decision
		maxAge time.Duration
	}{
		{"good", core.Allow, 0},
		{"cached", core.Allow, 3 * time.Second},
		{"nostore", core.Allow, -1},
		{"wrong", core.Deny, 0},
		{"forbidden", core.Deny, 0},
		{"other-audience", core.Deny, 0},
		{"nameless", core.Error, 0},
		{"slow", core.Error, 0},
		{"boom", core.Error, 0},
		{"garbage", core.Error, 0},
	}
	for _, tc := range tests {
		plugin := p
		if tc.tok == "slow" {
			plugin = short
		}
		res := plugin.Authenticate(context.Background(), bearerReq(tc.tok))
		if res.Decision != tc.want || res.MaxAge != tc.maxAge {
			t.Errorf("%s: got %s max-age %s (%q %v), want %s max-age %s", tc.tok, res.Decision, res.MaxAge, res.Reason, res.Err, tc.want, tc.maxAge)
		}
		if strings.Contains(res.Reason, tc.tok) || (res.Err != nil && strings.Contains(res.Err.Error(), tc.tok)) {
			t.Errorf("%s: the decision quotes the token: %q %v", tc.tok, res.Reason, res.Err)
		}
		if tc.tok == "good" {
			pr := res.Principal
			if pr.Subject != "alice" || strings.Join(pr.Scopes, ",") != "c1,c2" || pr.Claims["groups"] != "dev,ops" || pr.Claims["uid"] != "u-1" {
				t.Errorf("principal = %+v", pr)
			}
		}
	}
	n := calls.Load()
	for _, req := range []*core.Request{{Header: http.Header{}}, {Header: http.Header{"Authorization": {"Basic eA=="}}}} {
		if res := p.Authenticate(context.Background(), req); res.Decision != core.Abstain {
			t.Errorf("no bearer token: got %s, want abstain", res.Decision)
		}
	}
	if calls.Load() != n {
		t.Error("the webhook was called without a token")
	}
}

func TestForward(t *testing.T) {
	var got atomic.Pointer[http.Header]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		got.Store(&h)
		switch r.Header.Get("X-Team-Token") {
		case "good":
			w.Header().Set("X-Auth-Request-User", "team-a")
			w.Header().Set("X-Auth-Request-Conversations", "c1, c2")
			w.Header().Set("Cache-Control", "max-age=5")
		case "nameless":
		case "redirect":
			http.Redirect(w, r, "/login", http.StatusFound)
		case "down":
			http.Error(w, "", http.StatusBadGateway)
		default:
			http.Error(w, "", http.StatusUnauthorized)
		}
	}))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	l, err := plugins.NewLocal(ctx, "forward", New(), plugins.ConfigureRequest{Config: json.RawMessage(`{"url":"` + srv.URL + `","mode":"forward","allow_insecure_url":true,"headers":["x-team-token","Cookie"]}`)})
	if err != nil {
		t.Fatal(err)
	}
	req := func(tok string) *core.Request {
		return &core.Request{Method: "GET", Path: "/sockets/events/c1", RemoteAddr: "[2001:db8::1]:4000",
			Header: http.Header{"X-Team-Token": {tok}, "Authorization": {"Bearer other"}}, Query: map[string][]string{"session_api_key": {"k"}}}
	}
	res := l.Authenticate(ctx, req("good"))
	if res.Decision != core.Allow || res.Principal.Subject != "team-a" || strings.Join(res.Principal.Scopes, ",") != "c1,c2" || res.MaxAge != 5*time.Second {
		t.Fatalf("good: got %s %+v max-age %s (%v)", res.Decision, res.Principal, res.MaxAge, res.Err)
	}
	h := *got.Load()
	if h.Get("X-Team-Token") != "good" || h.Get("Authorization") != "" || h.Get("X-Forwarded-Method") != "GET" ||
		h.Get("X-Forwarded-Uri") != "/sockets/events/c1" || h.Get("X-Forwarded-For") != "2001:db8::1" {
		t.Errorf("the service saw %v: want the configured header, the X-Forwarded ones, and nothing else of the request", h)
	}
	for tok, want := range map[string]core.Decision{"wrong": core.Deny, "nameless": core.Error, "redirect": core.Error, "down": core.Error} {
		if res := l.Authenticate(ctx, req(tok)); res.Decision != want {
			t.Errorf("%s: got %s, want %s", tok, res.Decision, want)
		}
	}
	got.Store(nil)
	if res := l.Authenticate(ctx, &core.Request{Header: http.Header{"Authorization": {"Bearer x"}}}); res.Decision != core.Abstain || got.Load() != nil {
		t.Errorf("without its configured headers: got %s, called %v; want abstain without a call", res.Decision, got.Load() != nil)
	}
}

// TLS to the service: its CA from ca_file, and the plugin's client
// certificate when the service demands one.
func TestServiceTLS(t *testing.T) {
	ca := testcert.NewCA(t, "webhook-ca")
	clientCA := testcert.NewCA(t, "webhook-clients")
	dir := t.TempDir()
	var calls atomic.Int64
	srv := httptest.NewUnstartedServer(reviewer(t, &calls))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server(t).TLS()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCA.Pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := ca.WriteCA(t, dir, "ca.pem")
	certFile, keyFile := clientCA.Issue(t, testcert.Spec{CommonName: "agent-server", Client: true}).Write(t, dir, "client")

	with := configured(t, map[string]any{"url": srv.URL, "mode": "tokenreview", "ca_file": caFile, "client_cert_file": certFile, "client_key_file": keyFile})
	if res := with.Authenticate(context.Background(), bearerReq("good")); res.Decision != core.Allow {
		t.Errorf("with CA and client certificate: got %s %v", res.Decision, res.Err)
	}
	without := configured(t, map[string]any{"url": srv.URL, "mode": "tokenreview", "ca_file": caFile})
	if res := without.Authenticate(context.Background(), bearerReq("good")); res.Decision != core.Error {
		t.Errorf("without the client certificate: got %s, want error", res.Decision)
	}
	system := configured(t, map[string]any{"url": srv.URL, "mode": "tokenreview"})
	if res := system.Authenticate(context.Background(), bearerReq("good")); res.Decision != core.Error {
		t.Errorf("without the service's CA: got %s, want error", res.Decision)
	}
	if calls.Load() != 1 {
		t.Errorf("the service answered %d calls, want 1 (the others fail the TLS handshake)", calls.Load())
	}
}

func TestConfigure(t *testing.T) {
	for cfg, want := range map[string]string{
		`{}`: "url",
		`{"url":"http://authn","mode":"forward"}`:                             "allow_insecure_url",
		`{"url":"https://authn"}`:                                             "mode",
		`{"url":"https://authn","mode":"tokenreview","headers":["X"]}`:        "for mode forward",
		`{"url":"https://authn","mode":"forward","audiences":["a"]}`:          "for mode tokenreview",
		`{"url":"https://authn","mode":"forward","headers":["a b"]}`:          "not a header name",
		`{"url":"https://authn","mode":"forward","timeout":"0s"}`:             "timeout",
		`{"url":"https://authn","mode":"forward","client_cert_file":"x.pem"}`: "go together",
		`{"url":"https://authn","mode":"forward","ca_file":"/nonexistent"}`:   "ca_file",
		`{"url":"https://authn","mode":"forward","token":"x"}`:                "unknown field",
	} {
		err := New().Configure(context.Background(), plugins.ConfigureRequest{Config: json.RawMessage(cfg)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", cfg, err, want)
		}
	}
	if res := New().Authenticate(context.Background(), bearerReq("x")); res.Decision != core.Error {
		t.Errorf("unconfigured: got %s, want error", res.Decision)
	}
	p := configured(t, map[string]any{"url": "https://authn", "mode": "forward", "headers": []string{"x-team-token"}})
	if in := p.ConfiguredInputs(); len(in.Headers) != 1 || in.Headers[0] != "X-Team-Token" {
		t.Errorf("configured inputs = %+v", in)
	}
}

func TestCacheMaxAge(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 0, "max-age=7": 7 * time.Second, "private, max-age=2": 2 * time.Second, "max-age=0": -1, "no-store": -1, "No-Cache": -1, "max-age=x": 0, "public": 0} {
		h := http.Header{}
		if v != "" {
			h.Set("Cache-Control", v)
		}
		if got := cacheMaxAge(h); got != want {
			t.Errorf("%q: got %s, want %s", v, got, want)
		}
	}
}
