package actors

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/boltstore"
	"github.com/agent-server/agent-server/core/memstore"
)

// benchStores are the stores the durability benchmarks compare: memory is
// the baseline (no disk), bolt the durable default (one fsync per commit),
// postgres a throwaway PostgreSQL server (pgtest) with fsync and
// synchronous_commit on, as PostgreSQL ships. opts.NoSync, for setup
// speed, applies to bolt only.
var benchStores = []struct {
	name string
	open func(b *testing.B, opts boltstore.Options) core.Store
}{
	{"memory", func(*testing.B, boltstore.Options) core.Store { return memstore.New() }},
	{"bolt", func(b *testing.B, opts boltstore.Options) core.Store {
		st, err := boltstore.Open(filepath.Join(b.TempDir(), "bench.db"), opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}},
	{"postgres", func(b *testing.B, _ boltstore.Options) core.Store { return openPostgres(b) }},
}

// message200 is a MessageEvent body whose text is 200 bytes.
var message200 = messageBody(strings.Repeat("m", 200))

// BenchmarkDurableAppend posts 200-byte messages through the actors
// (registry, conversation actor, group-commit writer, store) with 256 or
// 1024 posters in flight, spread over 1 or 100 conversations. Each post
// returns only once its event is durable. Reported: events/s and commits
// per 1000 events (lower means more grouping).
func BenchmarkDurableAppend(b *testing.B) {
	for _, st := range benchStores {
		for _, convs := range []int{1, 100} {
			for _, posters := range []int{256, 1024} {
				benchmarkAppend(b, st.name, st.open, convs, posters)
			}
		}
	}
}

// benchmarkAppend runs one BenchmarkDurableAppend case.
func benchmarkAppend(b *testing.B, store string, open func(*testing.B, boltstore.Options) core.Store, convs, posters int) {
	b.Run(fmt.Sprintf("store=%s/conversations=%d/inflight=%d", store, convs, posters), func(b *testing.B) {
		counted := &countingStore{Store: open(b, boltstore.Options{})}
		sys := startSystem(b, counted, 0)
		ids := make([]string, convs)
		for i := range ids {
			ids[i] = createConv(b, sys)
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		start := time.Now()
		counted.batches.Store(0)
		for p := range posters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := next.Add(1); n <= int64(b.N); n = next.Add(1) {
					id := ids[(int(n)+p)%convs]
					if _, err := sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, message200); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
		b.ReportMetric(float64(counted.batches.Load())*1000/float64(b.N), "commits/1k-events")
	})
}

// countingStore counts AppendBatch calls: one per group commit.
type countingStore struct {
	core.Store
	batches atomic.Int64
}

func (c *countingStore) AppendBatch(ctx context.Context, b []core.Append) []error {
	c.batches.Add(1)
	return c.Store.AppendBatch(ctx, b)
}

// countTransport counts frames and signals when it has want of them. It is
// not a Backlogger, so a replay to it is sent as fast as it is read.
type countTransport struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (c *countTransport) Send([]byte) bool {
	if c.n.Add(1) == c.want {
		close(c.done)
	}
	return true
}

func (c *countTransport) Close(core.Disconnect) {}

// BenchmarkReplay100k replays a 100,000-event history (200-byte messages)
// to a reconnecting client: attach with resend_all, then every event read
// from the store in pages, off the actor's mailbox, and handed to the
// client's transport. Reported: ms per replay and events/s.
func BenchmarkReplay100k(b *testing.B) {
	const n = 100_000
	for _, st := range benchStores {
		b.Run("store="+st.name, func(b *testing.B) {
			store := st.open(b, boltstore.Options{NoSync: true}) // setup speed only; replay reads
			sys := startSystem(b, store, 0)
			id := createConv(b, sys)
			fill(b, store, id, n)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				tr := &countTransport{want: n + 1, done: make(chan struct{})} // full_state + n
				sys.Connect(tr, &core.Principal{}, id, Replay{Mode: ReplayAll})
				select {
				case <-tr.done:
				case <-time.After(2 * time.Minute):
					b.Fatalf("replay stalled at %d frames", tr.n.Load())
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(elapsed.Milliseconds())/float64(b.N), "ms/replay")
			b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "events/s")
		})
	}
}

// fill appends n sealed 200-byte messages to id, in batches.
func fill(b *testing.B, store core.Store, id string, n int) {
	b.Helper()
	ts := time.Now().UTC().Truncate(time.Microsecond)
	for seq := 1; seq <= n; {
		var evs []*core.Event
		for ; seq <= n && len(evs) < 5000; seq++ {
			ev := &core.Event{ID: core.NewID(), Seq: uint64(seq), Timestamp: ts, Source: core.SourceAgent, Kind: core.KindMessage, Body: message200}
			if err := ev.Seal(); err != nil {
				b.Fatal(err)
			}
			evs = append(evs, ev)
		}
		if err := store.AppendEvents(context.Background(), id, evs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPassivatedMemory activates 100,000 conversations on disk (one
// post each), lets every actor passivate, and reports the heap each
// passivated conversation still costs (the registry's entry), next to what
// each cost while its actor ran. Run it with -benchtime=1x: one iteration
// is the whole experiment.
func BenchmarkPassivatedMemory(b *testing.B) {
	const convs = 100_000
	for range b.N {
		store, err := boltstore.Open(filepath.Join(b.TempDir(), "bench.db"), boltstore.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		idle := 10 * time.Second
		sys := startSystem(b, store, idle)
		ids := make([]string, convs)
		for i := range ids {
			ids[i] = createConv(b, sys)
		}
		base := heap()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < convs; i = next.Add(1) - 1 {
					if _, err := sys.PostEvent(context.Background(), ids[i], core.SourceAgent, core.KindMessage, message200); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		c := counts(b, sys)
		active := heap()
		activeN := c.Active
		deadline := time.Now().Add(2 * time.Minute)
		for c.Active > 0 {
			if time.Now().After(deadline) {
				b.Fatalf("%d actors still running", c.Active)
			}
			time.Sleep(100 * time.Millisecond)
			c = counts(b, sys)
		}
		if c.Known != convs {
			b.Fatalf("registry knows %d conversations, want %d", c.Known, convs)
		}
		passive := heap()
		b.ReportMetric(float64(passive-base)/convs, "B/passivated-conv")
		if activeN > 0 {
			b.ReportMetric(float64(active-base)/float64(activeN), "B/active-conv")
		}
		b.ReportMetric(float64(passive)/(1<<20), "MiB-heap-passivated")
		shutdown(b, sys)
		store.Close()
	}
}

// heap returns the live heap after a full collection.
func heap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
