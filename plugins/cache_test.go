package plugins

import (
	"bytes"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/tests/testcert"
)

// testCache returns an enabled cache on a fake clock.
func testCache(t *testing.T, max int) (*decisionCache, *time.Time) {
	t.Helper()
	c, err := newDecisionCache(config.Cache{Enabled: true, AllowTTL: 10 * time.Second, DenyTTL: time.Second, MaxEntries: max})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	return c, &now
}

var headerIn = Inputs{Headers: []string{"X-Session-Api-Key"}}

func keyReq(v string) *core.Request {
	return &core.Request{Route: core.RouteEvents, Header: http.Header{"X-Session-Api-Key": {v}}}
}

func TestCacheKey(t *testing.T) {
	c, _ := testCache(t, 10)
	k1 := c.key("header", keyReq("secret"), headerIn)
	if k1 != c.key("header", keyReq("secret"), headerIn) {
		t.Error("key is not deterministic")
	}
	if bytes.Contains(k1[:], []byte("secret")) {
		t.Error("key holds the credential")
	}
	ca := testcert.NewCA(t, "ca")
	certIn := Inputs{ClientCertificate: true}
	withCert := func(l *testcert.Leaf) *core.Request {
		return &core.Request{Route: core.RouteEvents, ClientCertificates: []*x509.Certificate{l.Cert, ca.Cert}}
	}
	alice, bob := ca.Issue(t, testcert.Spec{CommonName: "alice", Client: true}), ca.Issue(t, testcert.Spec{CommonName: "bob", Client: true})
	if c.key("mtls", withCert(alice), certIn) == c.key("mtls", withCert(bob), certIn) {
		t.Error("two client certificates share a key")
	}
	if k1, k2 := c.key("mtls", withCert(alice), certIn), c.key("mtls", withCert(alice), certIn); k1 != k2 {
		t.Error("certificate key is not deterministic")
	}
	other := []cacheKey{
		c.key("bearer", keyReq("secret"), headerIn),
		c.key("header", keyReq("secret2"), headerIn),
		c.key("header", &core.Request{Route: core.RouteREST, Header: keyReq("secret").Header}, headerIn),
		c.key("header", &core.Request{Header: http.Header{"X-Session-Api-Key": {"sec", "ret"}}}, headerIn),
	}
	for i, k := range other {
		if k == k1 {
			t.Errorf("variant %d collides", i)
		}
	}
	// Another process (another secret) derives different keys.
	c2, _ := testCache(t, 10)
	if c2.key("header", keyReq("secret"), headerIn) == k1 {
		t.Error("keys do not depend on the per-process secret")
	}
}

// TestCacheKeyByRequest: a plugin that declares Request has its
// decisions keyed by the method, path, Origin and client host as well;
// one that does not, by its credential alone.
func TestCacheKeyByRequest(t *testing.T) {
	c, _ := testCache(t, 10)
	base := func() *core.Request {
		r := keyReq("secret")
		r.Route, r.Method, r.Path, r.Origin, r.RemoteAddr = core.RouteREST, http.MethodGet, "/api/conversations/A", "https://app.example", "192.0.2.1:40000"
		return r
	}
	byRequest := Inputs{Headers: headerIn.Headers, Request: true}
	tests := []struct {
		name   string
		change func(*core.Request)
		same   bool // with Request declared
	}{
		{"another path", func(r *core.Request) { r.Path = "/api/conversations/B" }, false},
		{"another method", func(r *core.Request) { r.Method = http.MethodDelete }, false},
		{"another origin", func(r *core.Request) { r.Origin = "https://evil.example" }, false},
		{"another client host", func(r *core.Request) { r.RemoteAddr = "192.0.2.2:40000" }, false},
		{"another port of the same client", func(r *core.Request) { r.RemoteAddr = "192.0.2.1:40001" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed := base()
			tt.change(changed)
			if got := c.key("webhook", base(), byRequest) == c.key("webhook", changed, byRequest); got != tt.same {
				t.Errorf("same key with Request declared = %v, want %v", got, tt.same)
			}
			if c.key("webhook", base(), headerIn) != c.key("webhook", changed, headerIn) {
				t.Error("without Request declared, the key depends on the request line")
			}
		})
	}
}

func TestCacheTTLs(t *testing.T) {
	c, now := testCache(t, 10)
	allow := core.Allowed(&core.Principal{Subject: "s"})
	short := core.Allowed(&core.Principal{Subject: "s", Expiry: now.Add(2 * time.Second)})
	expired := core.Allowed(&core.Principal{Subject: "s", Expiry: now.Add(-time.Second)})
	maxAge := func(r core.Result, d time.Duration) core.Result { r.MaxAge = d; return r }
	tests := []struct {
		name  string
		res   core.Result
		alive time.Duration // still cached just before this
	}{
		{"allow", allow, 10 * time.Second},
		{"allow capped by expiry", short, 2 * time.Second},
		{"deny", core.Denied("no"), time.Second},
		{"abstain", core.Abstained(), time.Second},
		{"error never", core.Failed(errInvalid), 0},
		{"already expired never", expired, 0},
		{"allow shortened by the plugin", maxAge(allow, 3*time.Second), 3 * time.Second},
		{"a plugin cannot lengthen it", maxAge(allow, time.Hour), 10 * time.Second},
		{"deny shortened by the plugin", maxAge(core.Denied("no"), 500*time.Millisecond), 500 * time.Millisecond},
		{"no-store from the plugin", maxAge(allow, -1), 0},
	}
	for i, tc := range tests {
		k := cacheKey{byte(i)}
		start := *now
		c.put(k, tc.res, c.currentEpoch())
		*now = start.Add(tc.alive - time.Millisecond)
		_, ok := c.get(k)
		if ok != (tc.alive > 0) {
			t.Errorf("%s: cached just before %s = %v", tc.name, tc.alive, ok)
		}
		*now = start.Add(tc.alive)
		if _, ok := c.get(k); ok {
			t.Errorf("%s: still cached at %s", tc.name, tc.alive)
		}
		*now = start
	}
}

func TestCacheBoundedAndPurge(t *testing.T) {
	c, _ := testCache(t, 3)
	for i := range 10 {
		c.put(cacheKey{byte(i)}, core.Denied("x"), c.currentEpoch())
		if c.len() > 3 {
			t.Fatalf("cache grew to %d, max 3", c.len())
		}
	}
	c.purge()
	if c.len() != 0 {
		t.Errorf("len after purge = %d", c.len())
	}
}

// TestCachePutAfterPurge: a result asked for before a purge (a reload's)
// is not stored after it; one asked for after it is.
func TestCachePutAfterPurge(t *testing.T) {
	tests := []struct {
		name   string
		purged bool // between the call's read of the epoch and its put
		want   bool
	}{
		{"asked before the purge", true, false},
		{"asked after it", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := testCache(t, 10)
			epoch := c.currentEpoch()
			if tt.purged {
				c.purge()
			}
			c.put(cacheKey{1}, core.Allowed(&core.Principal{Subject: "alice"}), epoch)
			if _, ok := c.get(cacheKey{1}); ok != tt.want {
				t.Errorf("cached = %v, want %v", ok, tt.want)
			}
		})
	}
}

func TestNilCacheIsANoOp(t *testing.T) {
	c, err := newDecisionCache(config.Cache{})
	if err != nil || c != nil {
		t.Fatalf("disabled cache = %v, %v", c, err)
	}
	c.put(cacheKey{}, core.Denied("x"), c.currentEpoch())
	if _, ok := c.get(cacheKey{}); ok || c.len() != 0 {
		t.Error("nil cache stored something")
	}
	c.purge()
}

// BenchmarkCacheKey derives the key of a bearer token, as every
// authentication does once per plugin consulted (twice when its chain does
// not settle).
func BenchmarkCacheKey(b *testing.B) {
	c, err := newDecisionCache(config.Cache{Enabled: true})
	if err != nil {
		b.Fatal(err)
	}
	req := &core.Request{Route: core.RouteEvents, Header: http.Header{"Authorization": {"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMzQ1IiwiZXhwIjoxNzk5OTk5OTk5fQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbi1oZXJl"}}}
	in := Inputs{Headers: []string{"Authorization"}}
	b.ReportAllocs()
	for b.Loop() {
		c.key("jwt", req, in)
	}
}
