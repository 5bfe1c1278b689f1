package plugins_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
)

// validKey is the one session API key in most tests.
const validKey = "k"

// testConfig is the default config pointing at the freshly built binaries.
func testConfig(t *testing.T, cache bool) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.Keys = []string{validKey}
	cfg.Auth.Cache.Enabled = cache
	cfg.Plugins.Dir = binDir
	cfg.Plugins.Restart.InitialBackoff = 20 * time.Millisecond
	cfg.Plugins.Restart.MaxBackoff = 200 * time.Millisecond
	// Real plugin processes on a loaded machine: one scheduling stall over
	// the default 500 ms must not turn into Error. A test of the deadline
	// itself sets its own.
	cfg.Auth.RPCTimeout = 30 * time.Second
	return cfg
}

// logBuffer is a concurrency-safe sink for a test's slog output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// startHost starts a host for cfg and closes it when the test ends.
func startHost(t *testing.T, cfg config.Config) (*plugins.Host, *logBuffer) {
	t.Helper()
	return startHostAt(t, cfg, 0)
}

// startHostAt is startHost with the host held to protocol version, or at
// its own when version is 0.
func startHostAt(t *testing.T, cfg config.Config, version uint) (*plugins.Host, *logBuffer) {
	t.Helper()
	log, buf := newLogger()
	h := plugins.NewHost(cfg, log)
	if version != 0 {
		plugins.SetProtocolVersion(h, version)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v\nlog:\n%s", err, buf)
	}
	t.Cleanup(func() { h.Close() })
	return h, buf
}

func chain(t *testing.T, h *plugins.Host, route core.Route) *core.Chain {
	t.Helper()
	c, err := h.Chain(route)
	if err != nil {
		t.Fatalf("Chain(%s): %v", route, err)
	}
	return c
}

// request builds an events request from a raw query and header pairs.
func request(rawQuery string, headers ...string) *core.Request {
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Add(headers[i], headers[i+1])
	}
	return &core.Request{Route: core.RouteEvents, Method: "GET", Path: "/sockets/events", Query: core.ParseQuery(rawQuery), Header: h}
}

// defaultChainCases are the ten cases of the default chain with key k.
var defaultChainCases = []struct {
	name    string
	req     *core.Request
	want    core.Decision
	decider string
}{
	{"no credentials", request(""), core.Deny, ""},
	{"query", request("session_api_key=k"), core.Allow, "query"},
	{"header", request("", "X-Session-API-Key", "k"), core.Allow, "header"},
	{"bearer", request("", "Authorization", "Bearer k"), core.Allow, "bearer"},
	{"correct query, wrong header", request("session_api_key=k", "X-Session-API-Key", "nope"), core.Allow, "query"},
	{"wrong query, correct header", request("session_api_key=nope", "X-Session-API-Key", "k"), core.Deny, "query"},
	{"empty query, correct header", request("session_api_key=", "X-Session-API-Key", "k"), core.Allow, "header"},
	{"wrong header, correct bearer", request("", "X-Session-API-Key", "nope", "Authorization", "Bearer k"), core.Deny, "header"},
	{"lowercase bearer", request("", "Authorization", "bearer k"), core.Allow, "bearer"},
	{"basic", request("", "Authorization", "Basic dXNlcjpwYXNz"), core.Deny, ""},
}

func TestDefaultChainThroughPlugins(t *testing.T) {
	for _, cache := range []bool{false, true} {
		h, _ := startHost(t, testConfig(t, cache))
		c := chain(t, h, core.RouteEvents)
		if got, want := c.Names(), []string{"query", "header", "bearer", "subprotocol", "first_message"}; !equal(got, want) {
			t.Fatalf("events chain = %v, want %v", got, want)
		}
		for round := range 2 { // the second round is served from the cache when it is on
			for _, tc := range defaultChainCases {
				res := c.Authenticate(context.Background(), tc.req)
				if res.Decision != tc.want || res.Authenticator != tc.decider {
					t.Errorf("cache=%v round %d %s: got %s by %q (%v), want %s by %q", cache, round, tc.name, res.Decision, res.Authenticator, res.Err, tc.want, tc.decider)
				}
				if res.Decision == core.Allow {
					if res.Principal.Subject != core.KeyFingerprint(validKey) || res.Principal.Authenticator != tc.decider {
						t.Errorf("%s: principal = %+v", tc.name, res.Principal)
					}
				}
				if res.Decision == core.Deny && tc.decider == "" && res.Reason != core.ReasonNoCredentials {
					t.Errorf("%s: reason = %q, want %q", tc.name, res.Reason, core.ReasonNoCredentials)
				}
			}
		}
	}
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestPlusInQueryKey(t *testing.T) {
	cfg := testConfig(t, false)
	cfg.Auth.Keys = []string{"a+b/c="}
	h, _ := startHost(t, cfg)
	c := chain(t, h, core.RouteEvents)
	for _, raw := range []string{"session_api_key=a+b/c=", "session_api_key=a%2Bb%2Fc%3D"} {
		if res := c.Authenticate(context.Background(), request(raw)); res.Decision != core.Allow {
			t.Errorf("%s: got %s, want allow", raw, res.Decision)
		}
	}
}

func TestRESTChain(t *testing.T) {
	h, _ := startHost(t, testConfig(t, false))
	c := chain(t, h, core.RouteREST)
	if got, want := c.Names(), []string{"header", "bearer"}; !equal(got, want) {
		t.Fatalf("rest chain = %v, want %v", got, want)
	}
	req := request("session_api_key=k")
	req.Route = core.RouteREST
	if res := c.Authenticate(context.Background(), req); res.Decision != core.Deny {
		t.Errorf("query key on rest: got %s, want deny", res.Decision)
	}
}

// TestSkipsPluginWithoutInputs proves the input skip by counting RPCs.
func TestSkipsPluginWithoutInputs(t *testing.T) {
	h, _ := startHost(t, testConfig(t, false))
	c := chain(t, h, core.RouteEvents)
	tests := []struct {
		name string
		req  *core.Request
		rpcs int64
	}{
		{"no credentials: every plugin skipped", request(""), 0},
		{"empty query value: skipped", request("session_api_key="), 0},
		{"unrelated query and header: skipped", request("foo=bar", "X-Other", "v"), 0},
		{"header: query skipped, header decides", request("", "X-Session-API-Key", "k"), 1},
		{"bearer: query and header skipped", request("", "Authorization", "Bearer k"), 1},
		{"wrong query: query decides alone", request("session_api_key=x", "X-Session-API-Key", "k"), 1},
		{"basic: only bearer asked", request("", "Authorization", "Basic eA=="), 1},
	}
	for _, tc := range tests {
		before := plugins.RPCCount(h)
		c.Authenticate(context.Background(), tc.req)
		if got := plugins.RPCCount(h) - before; got != tc.rpcs {
			t.Errorf("%s: %d RPCs, want %d", tc.name, got, tc.rpcs)
		}
	}
}

func TestCacheAvoidsRPCsAndPurgeAndReloadEmptyIt(t *testing.T) {
	cfg := testConfig(t, true)
	cfg.Auth.Keys = []string{"old", "other"}
	h, _ := startHost(t, cfg)
	c := chain(t, h, core.RouteEvents)
	ctx := context.Background()
	req := request("", "X-Session-API-Key", "old")

	// Settle answers only from the cache (or by skipping a plugin whose
	// inputs are absent), never with a call.
	if res, ok := c.Settle(req); ok {
		t.Fatalf("Settle before any call: got %s, want it unsettled", res.Decision)
	}
	if res, ok := c.Settle(request("")); !ok || res.Decision != core.Deny || res.Reason != core.ReasonNoCredentials {
		t.Errorf("Settle without credentials: got %s (%q), %v; want a deny for no credentials", res.Decision, res.Reason, ok)
	}
	if got := plugins.RPCCount(h); got != 0 {
		t.Fatalf("Settle made %d RPCs", got)
	}
	if res := c.Authenticate(ctx, req); res.Decision != core.Allow {
		t.Fatalf("first: got %s (%v), want allow", res.Decision, res.Err)
	}
	n := plugins.RPCCount(h)
	if res, ok := c.Settle(req); !ok || res.Decision != core.Allow || !res.Cached || res.Principal.Subject != core.KeyFingerprint("old") {
		t.Errorf("Settle after the call: got %s (cached %v), %v; want the cached allow", res.Decision, res.Cached, ok)
	}
	for range 5 {
		if res := c.Authenticate(ctx, req); res.Decision != core.Allow {
			t.Fatalf("cached: got %s, want allow", res.Decision)
		}
	}
	if got := plugins.RPCCount(h); got != n {
		t.Errorf("cached requests made %d RPCs, want 0", got-n)
	}
	// A cached principal is a copy: changing it must not change the cache.
	res := c.Authenticate(ctx, req)
	res.Principal.Subject = "tampered"
	if res := c.Authenticate(ctx, req); res.Principal.Subject != core.KeyFingerprint("old") {
		t.Errorf("cache entry was changed through a returned principal: %q", res.Principal.Subject)
	}

	h.Purge()
	if plugins.CacheLen(h) != 0 {
		t.Errorf("cache holds %d entries after Purge", plugins.CacheLen(h))
	}
	if _, ok := c.Settle(req); ok {
		t.Error("Settle answered after Purge")
	}
	c.Authenticate(ctx, req)
	if got := plugins.RPCCount(h); got != n+1 {
		t.Errorf("after Purge: %d RPCs, want 1", got-n)
	}

	// Rotate "old" out: the cached Allow must not survive the reload.
	cfg.Auth.Keys = []string{"new"}
	if err := h.Reload(ctx, cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if res := c.Authenticate(ctx, req); res.Decision != core.Deny {
		t.Errorf("rotated-out key after reload: got %s, want deny", res.Decision)
	}
	if res := c.Authenticate(ctx, request("", "X-Session-API-Key", "new")); res.Decision != core.Allow {
		t.Errorf("new key after reload: got %s, want allow", res.Decision)
	}
}

// A reload that a process refuses is rejected as a whole: every process
// serves the running config afterwards, none the new one, so that no two
// processes of a plugin ever disagree on which keys are valid. Each case
// reloads the keys from "old" to "new" with a plugin config that some
// processes refuse: all of them (refuse_reconfigure), or all but the first
// (claim_file: the first takes it, and is rolled back). Stopping at the
// first refusal, as before, left the first process on the new keys and
// the second on the old.
func TestReloadRefusedByAProcessIsRolledBack(t *testing.T) {
	held := map[string]any{"mode": "header", "sleep": time.Minute.String()}
	with := func(extra map[string]any) map[string]any {
		m := maps.Clone(held)
		maps.Copy(m, extra)
		return m
	}
	tests := []struct {
		name     string
		initial  map[string]any
		reloaded func(dir string) map[string]any
	}{
		{"every process refuses", with(map[string]any{"refuse_reconfigure": true}), func(string) map[string]any { return held }},
		{"the second process refuses, the first took it", held, func(dir string) map[string]any {
			return with(map[string]any{"claim_file": filepath.Join(dir, "claim")})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := faultConfig(t, "auth-fault", tt.initial)
			cfg.Plugins.Processes = 2
			cfg.Plugins.MaxInFlight = 1
			cfg.Auth.Keys = []string{"old"}
			cfg.Auth.RPCTimeout = time.Minute // the held call must outlast the calls to process 1
			h, logs := startHost(t, cfg)
			c := chain(t, h, core.RouteREST)
			ctx := context.Background()

			next := cfg
			next.Auth.Keys = []string{"new"}
			next.Plugins.Instances = map[string]config.Plugin{"fault": {Path: cfg.Plugins.Instances["fault"].Path, Config: tt.reloaded(t.TempDir())}}
			if err := h.Reload(ctx, next); err == nil || !strings.Contains(err.Error(), "reload rejected") {
				t.Fatalf("Reload: got %v, want it rejected", err)
			}
			// Each process holds the running keys: process 1 is asked
			// while a held call fills process 0's one slot.
			for k := range 2 {
				if k == 1 {
					go c.Authenticate(ctx, fault("hold:busy"))
					waitFor(t, 30*time.Second, func() bool { return process(t, h, "fault", 0).InFlight == 1 })
				}
				for key, want := range map[string]core.Decision{"old": core.Allow, "new": core.Deny} {
					if res := c.Authenticate(ctx, fault("key:"+key)); res.Decision != want {
						t.Errorf("process %d, key %q: got %s (%v), want %s\n%s", k, key, res.Decision, res.Err, want, logs)
					}
				}
				if k == 1 && process(t, h, "fault", 0).InFlight != 1 {
					t.Fatal("process 0's held call ended: the calls above may not have reached process 1")
				}
			}
		})
	}
}

// TestReloadKeepsOutDecisionsOfTheReplacedConfig: a call the plugin
// decided under the running config, whose answer arrives after a reload
// replaced it, is answered but not cached: the same credential is then
// asked again, under the new config. Before, the old Allow was cached
// after the reload had emptied the cache, and answered for allow_ttl.
func TestReloadKeepsOutDecisionsOfTheReplacedConfig(t *testing.T) {
	cfg := faultConfig(t, "auth-fault", map[string]any{"mode": "header", "sleep": "1s"})
	cfg.Auth.Cache.Enabled = true
	h, logs := startHost(t, cfg)
	c := chain(t, h, core.RouteREST)
	req := fault("hold:alice")
	done := make(chan core.Result, 1)
	go func() { done <- c.Authenticate(context.Background(), req) }()
	waitFor(t, 30*time.Second, func() bool { return process(t, h, "fault", 0).InFlight == 1 })

	next := cfg
	next.Plugins.Instances = map[string]config.Plugin{"fault": {Path: cfg.Plugins.Instances["fault"].Path, Config: map[string]any{"mode": "panic"}}} // allows nothing
	if err := h.Reload(context.Background(), next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if res := <-done; res.Decision != core.Allow {
		t.Fatalf("the call in flight: got %s (%v), want the running config's Allow\n%s", res.Decision, res.Err, logs)
	}
	n := plugins.RPCCount(h)
	if res := c.Authenticate(context.Background(), req); res.Decision == core.Allow || res.Cached {
		t.Errorf("after the reload: got %s (cached %v), want the new config's answer, not the replaced one's", res.Decision, res.Cached)
	}
	if plugins.RPCCount(h) == n {
		t.Error("after the reload the plugin was not asked")
	}
}

// TestReloadNotAnsweredRestartsTheProcess: a process whose Configure
// outlasts the setup timeout fails the reload, which is rejected, and it
// is restarted with the running config: it could otherwise apply the
// rejected config when its Configure ends, and serve keys the host says
// it does not hold. Before, it was neither rolled back nor restarted.
func TestReloadNotAnsweredRestartsTheProcess(t *testing.T) {
	cfg := faultConfig(t, "auth-fault", map[string]any{"mode": "header"})
	cfg.Plugins.Processes = 1
	h, logs := startHost(t, cfg)
	c := chain(t, h, core.RouteREST)
	ctx := context.Background()
	first := process(t, h, "fault", 0).PID

	next := cfg
	next.Auth.Keys = []string{validKey, "k2"}
	next.Plugins.Instances = map[string]config.Plugin{"fault": {Path: cfg.Plugins.Instances["fault"].Path, Config: map[string]any{"mode": "header", "configure_delay": "6s"}}}
	err := h.Reload(ctx, next)
	if err == nil || !strings.Contains(err.Error(), "no answer to its config") || !strings.Contains(err.Error(), "reload rejected") {
		t.Fatalf("Reload: %v, want it rejected for want of an answer", err)
	}
	waitFor(t, 30*time.Second, func() bool {
		p := process(t, h, "fault", 0)
		return p.State == plugins.StateReady && p.PID != 0 && p.PID != first
	})
	for key, want := range map[string]core.Decision{validKey: core.Allow, "k2": core.Deny} {
		if res := c.Authenticate(ctx, fault("key:"+key)); res.Decision != want {
			t.Errorf("key %q after the rejected reload: got %s (%v), want %s\n%s", key, res.Decision, res.Err, want, logs)
		}
	}
}

// A process that was starting when a reload came (its Configure had begun
// with the old config, and the reload found no process to reconfigure) is
// not put in service with the old config: it is started again with the
// new one.
func TestProcessStartingDuringAReloadComesUpWithTheNewConfig(t *testing.T) {
	cfg := faultConfig(t, "auth-fault", map[string]any{"mode": "header", "configure_delay": "300ms"})
	cfg.Plugins.Processes = 1
	cfg.Auth.Keys = []string{"revoked"}
	h, logs := startHost(t, cfg)
	c := chain(t, h, core.RouteREST)
	ctx := context.Background()
	first := process(t, h, "fault", 0).PID
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The restart's Configure, with the old keys, has begun.
	waitFor(t, 30*time.Second, func() bool { return strings.Count(logs.String(), "msg=configuring") == 2 })
	next := cfg
	next.Auth.Keys = []string{"current"}
	if err := h.Reload(ctx, next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	waitFor(t, 30*time.Second, func() bool {
		p := process(t, h, "fault", 0)
		return p.State == plugins.StateReady && p.PID != 0 && p.PID != first
	})
	for key, want := range map[string]core.Decision{"revoked": core.Deny, "current": core.Allow} {
		if res := c.Authenticate(ctx, fault("key:"+key)); res.Decision != want {
			t.Errorf("key %q: got %s (%v), want %s", key, res.Decision, res.Err, want)
		}
	}
	// The path under test ran: not a reload that came after the install.
	if !strings.Contains(logs.String(), "a reload has replaced since") {
		t.Errorf("the restarted process was not found stale and started again:\n%s", logs)
	}
}

func TestReloadRefusesChainChange(t *testing.T) {
	cfg := testConfig(t, false)
	h, _ := startHost(t, cfg)
	cfg.Auth.Chains.REST = []string{"bearer"}
	if err := h.Reload(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "auth.chains") {
		t.Errorf("Reload with a changed chain: got %v, want an auth.chains error", err)
	}
}

func TestReadyAndHealth(t *testing.T) {
	h, _ := startHost(t, testConfig(t, false))
	if err := h.Ready(); err != nil {
		t.Fatalf("Ready after Start: %v", err)
	}
	for _, hl := range h.Health() {
		if hl.State != plugins.StateReady || hl.PID == 0 {
			t.Errorf("health %+v, want ready with a pid", hl)
		}
	}
	h.Close()
	if err := h.Ready(); err == nil {
		t.Error("Ready after Close: got nil, want an error")
	}
	for _, hl := range h.Health() {
		if hl.State != plugins.StateStopped {
			t.Errorf("after Close: %s is %s, want stopped", hl.Name, hl.State)
		}
		if hl.PID != 0 {
			t.Errorf("after Close: %s still has pid %d", hl.Name, hl.PID)
		}
	}
}

func TestStartRefusesBadSetups(t *testing.T) {
	link := filepath.Join(t.TempDir(), "plugins")
	if err := os.Symlink(binDir, link); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	tests := []struct {
		name  string
		edit  func(*config.Config)
		wants []string
	}{
		{"plugins.dir is a symlink", func(c *config.Config) { c.Plugins.Dir = link }, []string{"symlink", link}},
		{"binary missing", func(c *config.Config) { c.Plugins.Dir = empty }, []string{"plugin query", "auth-query"}},
		{"bad plugin config", func(c *config.Config) {
			c.Plugins.Instances["header"] = config.Plugin{Config: map[string]any{"colour": "blue"}}
		}, []string{"plugin header", "bad plugin config", "colour"}},
		{"no keys", func(c *config.Config) { c.Auth.Keys = nil }, []string{"plugin query", "no session API keys"}},
		{"bad key", func(c *config.Config) { c.Auth.Keys = []string{"sha256:zz"} }, []string{"auth.keys", "key 0"}},
		{"jwt without secret", func(c *config.Config) {
			c.Auth.Chains.REST = []string{"jwt"}
		}, []string{"plugin jwt", "secret must be at least 32 bytes"}},
		{"bad name", func(c *config.Config) { c.Auth.Chains.REST = []string{"../evil"} }, []string{`"../evil"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, false)
			cfg.Plugins.Instances = map[string]config.Plugin{}
			tc.edit(&cfg)
			log, _ := newLogger()
			h := plugins.NewHost(cfg, log)
			err := h.Start(context.Background())
			defer h.Close()
			if err == nil {
				t.Fatal("Start: got nil, want an error")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestChecksumPin(t *testing.T) {
	path := filepath.Join(binDir, "auth-header")
	checks, err := plugins.Verify(configWithPin(t, "header", ""))
	if err != nil {
		t.Fatalf("Verify without pins: %v", err)
	}
	var actual string
	for _, c := range checks {
		if c.Name == "header" {
			actual = c.Actual
		}
	}
	if len(actual) != 64 {
		t.Fatalf("actual hash %q", actual)
	}

	t.Run("matching pin starts", func(t *testing.T) {
		startHost(t, configWithPin(t, "header", "sha256:"+actual))
	})
	t.Run("mismatch is refused", func(t *testing.T) {
		bad := strings.Repeat("0", 64)
		cfg := configWithPin(t, "header", bad)
		h := plugins.NewHost(cfg, nil)
		defer h.Close()
		err := h.Start(context.Background())
		var pm *plugins.PinMismatchError
		if !errors.As(err, &pm) {
			t.Fatalf("Start: got %v, want a PinMismatchError", err)
		}
		for _, w := range []string{path, bad, actual, "plugin header"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not name %q", err, w)
			}
		}
		if _, err := plugins.Verify(cfg); !errors.As(err, &pm) {
			t.Errorf("Verify: got %v, want a PinMismatchError", err)
		}
	})
}

func configWithPin(t *testing.T, name, pin string) config.Config {
	t.Helper()
	cfg := testConfig(t, false)
	cfg.Plugins.Instances = map[string]config.Plugin{name: {SHA256: pin}}
	return cfg
}

func TestDescribe(t *testing.T) {
	cfg := testConfig(t, false)
	cfg.Auth.Chains.REST = []string{"header", "jwt"}
	ds, err := plugins.Describe(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	var names []string
	for _, d := range ds {
		names = append(names, d.Name)
		if d.Version == "" || len(d.SHA256) != 64 || d.Path == "" {
			t.Errorf("description %+v is incomplete", d)
		}
	}
	if want := []string{"query", "header", "bearer", "subprotocol", "first_message", "jwt"}; !equal(names, want) {
		t.Errorf("described %v, want %v", names, want)
	}
	if got := ds[0].Inputs.QueryParams; !equal(got, []string{"session_api_key"}) || !ds[0].WantsKeys {
		t.Errorf("query inputs = %+v, wants keys %v", ds[0].Inputs, ds[0].WantsKeys)
	}
	if ds[5].WantsKeys {
		t.Error("jwt should not ask for the session keys")
	}
}

func TestHandshakeVersionMismatchNamesBothVersions(t *testing.T) {
	cfg := testConfig(t, false)
	cfg.Auth.Chains = config.Chains{REST: []string{"header"}}
	h := plugins.NewHost(cfg, nil)
	defer h.Close()
	plugins.SetProtocolVersion(h, 99)
	err := h.Start(context.Background())
	if err == nil {
		t.Fatal("Start: got nil, want a version mismatch")
	}
	for _, w := range []string{"99", "Plugin version: 2", "plugin header", "rebuild the plugin"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// faultConfig runs the fault plugin, in mode, alone on the rest chain.
func faultConfig(t *testing.T, binary string, pc map[string]any) config.Config {
	t.Helper()
	cfg := testConfig(t, false)
	cfg.Auth.Chains = config.Chains{REST: []string{"fault"}}
	cfg.Plugins.Instances = map[string]config.Plugin{"fault": {Path: filepath.Join(binDir, binary), Config: pc}}
	return cfg
}

func faultRequest() *core.Request {
	return &core.Request{Route: core.RouteREST, Header: http.Header{"X-Fault": {"1"}}}
}

func TestGarbageOnStdoutBeforeHandshake(t *testing.T) {
	cfg := faultConfig(t, "auth-garbage", map[string]any{"mode": "allow"})
	h := plugins.NewHost(cfg, nil)
	defer h.Close()
	err := h.Start(context.Background())
	if err == nil {
		t.Fatal("Start: got nil, want a handshake error")
	}
	for _, w := range []string{"plugin fault", "handshake failed", "stdout", "hello from a plugin"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// TestHangingPluginYieldsError: a plugin that ignores its deadline yields
// Error at the deadline. The plugin hangs for a minute, so an answer within
// 30 s (a bound no stall reaches, and far below the hang) and a deadline
// error prove the host did not wait for it; how close to the 100 ms deadline
// it answers is for benchmarks.
func TestHangingPluginYieldsError(t *testing.T) {
	const hang = time.Minute
	cfg := faultConfig(t, "auth-fault", map[string]any{"mode": "sleep", "sleep": hang.String()})
	cfg.Auth.RPCTimeout = 100 * time.Millisecond
	h, _ := startHost(t, cfg)
	start := time.Now()
	res := chain(t, h, core.RouteREST).Authenticate(context.Background(), faultRequest())
	if res.Decision != core.Error {
		t.Fatalf("got %s, want error", res.Decision)
	}
	if took := time.Since(start); took > hang/2 {
		t.Errorf("took %s: waited for the plugin's %s hang instead of the 100ms deadline", took, hang)
	}
	// The host's deadline, or the plugin's answer at its own deadline
	// (which the SDK sends at about the same moment, and which a host
	// stalled on a loaded machine may read first): either says deadline.
	if !errors.Is(res.Err, context.DeadlineExceeded) && !strings.Contains(res.Err.Error(), "deadline exceeded") {
		t.Errorf("err = %v, want a deadline error", res.Err)
	}
}

func TestPanicInAuthenticateFailsClosedAndIsLogged(t *testing.T) {
	h, logs := startHost(t, faultConfig(t, "auth-fault", map[string]any{"mode": "panic"}))
	c := chain(t, h, core.RouteREST)
	for range 2 {
		res := c.Authenticate(context.Background(), faultRequest())
		if res.Decision != core.Error {
			t.Fatalf("got %s, want error", res.Decision)
		}
	}
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(logs.String(), "deliberate panic") })
	if !strings.Contains(logs.String(), "plugin=fault") {
		t.Errorf("panic log lacks plugin=fault:\n%s", logs)
	}
	if hl := h.Health()[0]; hl.State != plugins.StateReady || hl.Restarts != 0 {
		t.Errorf("after a caught panic: %+v, want ready, never restarted", hl)
	}
}

func TestCrashMidRequestFailsClosedThenRestarts(t *testing.T) {
	h, _ := startHost(t, faultConfig(t, "auth-fault", map[string]any{"mode": "exit"}))
	res := chain(t, h, core.RouteREST).Authenticate(context.Background(), faultRequest())
	if res.Decision != core.Error {
		t.Fatalf("in-flight request: got %s, want error", res.Decision)
	}
	waitFor(t, 30*time.Second, func() bool { return h.Health()[0].Restarts >= 1 && h.Ready() == nil })
}

func TestKilledPluginFailsClosedThenRecovers(t *testing.T) {
	h, logs := startHost(t, testConfig(t, false))
	c := chain(t, h, core.RouteEvents)
	req := request("", "X-Session-API-Key", validKey)
	if res := c.Authenticate(context.Background(), req); res.Decision != core.Allow {
		t.Fatalf("before kill: got %s", res.Decision)
	}
	var pid int
	for _, hl := range h.Health() {
		if hl.Name == "header" {
			pid = hl.PID
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
	// Until it is back, a request that reaches the header plugin fails
	// closed: whatever the timing, no decision but Allow (before the kill
	// lands, or after the restart) or Error. Whether a request happens to
	// fall in the short restart window is timing, so it is not required.
	restarted := func() (plugins.Health, bool) {
		for _, hl := range h.Health() {
			if hl.Name == "header" {
				return hl, hl.PID != pid && hl.PID != 0 && hl.Restarts >= 1
			}
		}
		return plugins.Health{}, false
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := c.Authenticate(context.Background(), req)
		if res.Decision != core.Allow && res.Decision != core.Error {
			t.Fatalf("got %s (%s), want error or, once restarted, allow", res.Decision, res.Reason)
		}
		if _, ok := restarted(); ok && h.Ready() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no restart within 30s; health %+v\n%s", h.Health(), logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Restarted: requests are allowed again.
	if res := c.Authenticate(context.Background(), req); res.Decision != core.Allow {
		t.Fatalf("after the restart: got %s (%v)", res.Decision, res.Err)
	}
	if hl, _ := restarted(); hl.Restarts != 1 {
		t.Errorf("header health after restart: %+v (old pid %d), want one restart", hl, pid)
	}
	if !strings.Contains(logs.String(), "plugin process ended") {
		t.Errorf("crash not logged:\n%s", logs)
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
