package actors

import (
	"runtime"

	"github.com/asynkron/protoactor-go/actor"
	cmap "github.com/orcaman/concurrent-map"
)

// bucketsPerCPU sizes protoactor's process registry: lock stripes per CPU.
// Each bucket is a concurrent map of 32 shards, so 16 buckets per CPU give
// 512 locks per CPU, far more than a spawn or a lookup ever waits on.
const bucketsPerCPU = 16

// maxBuckets is protoactor's own bucket count, the most the registry gets.
const maxBuckets = 1024

// processBuckets is how many buckets the process registry gets on this
// machine.
func processBuckets() int {
	return min(maxBuckets, bucketsPerCPU*runtime.GOMAXPROCS(0))
}

// stripeRegistry moves the actor system's process registry to n buckets.
// protoactor stripes it over 1,024 buckets of 32 Go maps each, 32,768 maps
// in all. An actor's ID picks its map by hash, and a Go map never gives back
// the storage its first entry allocated, so a server that has spawned a few
// tens of thousands of short-lived actors (one per connection) keeps about
// 9 MiB of empty maps for good, and some 3 MiB more are allocated at start.
// With n buckets that cost is bounded by n*32 maps, and the maps grow only
// with the actors alive at once. It must run before any actor is spawned:
// the entries already registered (the event stream, the dead letters) are
// carried over, and nothing else may use the registry meanwhile.
func stripeRegistry(sys *actor.ActorSystem, n int) {
	old := sys.ProcessRegistry.LocalPIDs
	m := &actor.SliceMap{LocalPIDs: make([]cmap.ConcurrentMap, max(n, 1))}
	for i := range m.LocalPIDs {
		m.LocalPIDs[i] = cmap.New()
	}
	for _, bucket := range old.LocalPIDs {
		bucket.IterCb(func(id string, p any) { m.GetBucket(id).Set(id, p) })
	}
	sys.ProcessRegistry.LocalPIDs = m
}
