package plugins_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/bearer"
	"github.com/agent-server/agent-server/plugins/header"
	"github.com/agent-server/agent-server/plugins/query"
)

// Benchmark hosts are started once per configuration and closed by TestMain,
// so b.N ramp-up does not pay for process launches.
var (
	benchMu    sync.Mutex
	benchHosts = map[bool]*plugins.Host{}
)

func benchHost(b *testing.B, cache bool) *plugins.Host {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if h, ok := benchHosts[cache]; ok {
		return h
	}
	cfg := config.Default()
	cfg.Auth.Keys = []string{validKey}
	cfg.Auth.Cache.Enabled = cache
	cfg.Plugins.Dir = binDir
	h := plugins.NewHost(cfg, nil)
	if err := h.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	benchHosts[cache] = h
	return h
}

func closeBenchHosts() {
	benchMu.Lock()
	defer benchMu.Unlock()
	for _, h := range benchHosts {
		h.Close()
	}
}

// measure runs auth b.N times, checks every result is Allow and reports the
// median and 99th percentile latency of one call.
func measure(b *testing.B, auth core.Authenticator) {
	b.Helper()
	req := request("", "X-Session-API-Key", validKey)
	ctx := context.Background()
	for range 100 { // warm connections, pools and the cache
		auth.Authenticate(ctx, req)
	}
	lat := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		res := auth.Authenticate(ctx, req)
		lat[i] = time.Since(start)
		if res.Decision != core.Allow {
			b.Fatalf("got %s (%v)", res.Decision, res.Err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Nanoseconds()), "p99-ns")
}

// BenchmarkAuthChain measures per-request authentication latency with the
// session key in X-Session-API-Key:
//
//   - in-process: the default chain, the plugins linked into the server;
//   - one-rpc: the header plugin alone, one gRPC call, no cache;
//   - plugins-cache-off: the default chain of plugin processes; query is
//     skipped with no RPC, header answers over one RPC;
//   - plugins-cache-on: the same with the decision cache and a repeated key.
func BenchmarkAuthChain(b *testing.B) {
	b.Run("in-process", func(b *testing.B) {
		ctx := context.Background()
		digests, err := plugins.KeyDigests([]string{validKey})
		if err != nil {
			b.Fatal(err)
		}
		var auths []core.Authenticator
		for name, p := range map[string]plugins.Plugin{"query": query.New(), "header": header.New(), "bearer": bearer.New()} {
			l, err := plugins.NewLocal(ctx, name, p, plugins.ConfigureRequest{KeyDigests: digests})
			if err != nil {
				b.Fatal(err)
			}
			auths = append(auths, l)
		}
		slices.SortFunc(auths, func(a, c core.Authenticator) int { return order(a.Name()) - order(c.Name()) })
		c, err := core.NewChain(core.RouteEvents, auths...)
		if err != nil {
			b.Fatal(err)
		}
		measure(b, chainAuth{c})
	})
	b.Run("one-rpc", func(b *testing.B) {
		a, err := benchHost(b, false).Authenticator("header")
		if err != nil {
			b.Fatal(err)
		}
		measure(b, a)
	})
	b.Run("plugins-cache-off", func(b *testing.B) {
		c, err := benchHost(b, false).Chain(core.RouteEvents)
		if err != nil {
			b.Fatal(err)
		}
		measure(b, chainAuth{c})
	})
	b.Run("plugins-cache-on", func(b *testing.B) {
		c, err := benchHost(b, true).Chain(core.RouteEvents)
		if err != nil {
			b.Fatal(err)
		}
		measure(b, chainAuth{c})
	})
}

func order(name string) int { return slices.Index([]string{"query", "header", "bearer"}, name) }

// chainAuth lets measure take a chain.
type chainAuth struct{ c *core.Chain }

func (a chainAuth) Name() string { return "chain" }
func (a chainAuth) Authenticate(ctx context.Context, r *core.Request) core.Result {
	return a.c.Authenticate(ctx, r)
}

// BenchmarkAuthChainPaired alternates two authenticators call by call, so
// both see the same machine noise, and reports each one's median and the
// ratio of the medians: the fair way to compare them on a busy machine.
func BenchmarkAuthChainPaired(b *testing.B) {
	b.Run("plugins-cache-off-vs-one-rpc", func(b *testing.B) {
		one, err := benchHost(b, false).Authenticator("header")
		if err != nil {
			b.Fatal(err)
		}
		c, err := benchHost(b, false).Chain(core.RouteEvents)
		if err != nil {
			b.Fatal(err)
		}
		paired(b, chainAuth{c}, one)
	})
	b.Run("plugins-cache-on-vs-in-process", func(b *testing.B) {
		ctx := context.Background()
		digests, _ := plugins.KeyDigests([]string{validKey})
		var auths []core.Authenticator
		for _, p := range []plugins.Plugin{query.New(), header.New(), bearer.New()} {
			l, err := plugins.NewLocal(ctx, p.Info(ctx).Name, p, plugins.ConfigureRequest{KeyDigests: digests})
			if err != nil {
				b.Fatal(err)
			}
			auths = append(auths, l)
		}
		local, err := core.NewChain(core.RouteEvents, auths...)
		if err != nil {
			b.Fatal(err)
		}
		c, err := benchHost(b, true).Chain(core.RouteEvents)
		if err != nil {
			b.Fatal(err)
		}
		paired(b, chainAuth{c}, chainAuth{local})
	})
}

// paired measures subject and baseline alternately on one request with the
// session key, after a warm-up (see pairedOver).
func paired(b *testing.B, subject, baseline core.Authenticator) {
	b.Helper()
	req := request("", "X-Session-API-Key", validKey)
	ctx := context.Background()
	for range 100 {
		subject.Authenticate(ctx, req)
		baseline.Authenticate(ctx, req)
	}
	pairedOver(b, subject, baseline, slices.Repeat([]*core.Request{req}, b.N))
}

// pairedOver runs subject then baseline on request i, for each i, timing
// each call, and reports their p50s, p99s, the p50 ratio and the calls per
// second of summed call time.
func pairedOver(b *testing.B, subject, baseline core.Authenticator, reqs []*core.Request) {
	b.Helper()
	ctx := context.Background()
	ls := make([]time.Duration, len(reqs))
	lb := make([]time.Duration, len(reqs))
	b.ResetTimer()
	for i, req := range reqs {
		t0 := time.Now()
		r1 := subject.Authenticate(ctx, req)
		t1 := time.Now()
		r2 := baseline.Authenticate(ctx, req)
		t2 := time.Now()
		ls[i], lb[i] = t1.Sub(t0), t2.Sub(t1)
		if r1.Decision != core.Allow || r2.Decision != core.Allow {
			b.Fatalf("got %s (%v) and %s (%v)", r1.Decision, r1.Err, r2.Decision, r2.Err)
		}
	}
	b.StopTimer()
	var sum, sumBase time.Duration
	for i := range ls {
		sum, sumBase = sum+ls[i], sumBase+lb[i]
	}
	slices.Sort(ls)
	slices.Sort(lb)
	ps, pb := ls[len(ls)/2], lb[len(lb)/2]
	b.ReportMetric(float64(ps.Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(pb.Nanoseconds()), "base-p50-ns")
	b.ReportMetric(float64(ls[min(len(ls)-1, len(ls)*99/100)].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(lb[min(len(lb)-1, len(lb)*99/100)].Nanoseconds()), "base-p99-ns")
	b.ReportMetric(float64(ps)/float64(pb), "p50-ratio")
	b.ReportMetric(float64(len(ls))/sum.Seconds(), "auths/s")
	b.ReportMetric(float64(len(lb))/sumBase.Seconds(), "base-auths/s")
}
