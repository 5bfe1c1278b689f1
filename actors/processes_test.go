package actors

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// echo replies to every string with the same string.
type echo struct{}

func (echo) Receive(ctx actor.Context) {
	if s, ok := ctx.Message().(string); ok {
		ctx.Respond(s)
	}
}

func TestStripeRegistry(t *testing.T) {
	tests := []struct {
		name    string
		buckets int
	}{
		{"one bucket", 1},
		{"this machine", processBuckets()},
		{"zero means one", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := actor.NewActorSystem()
			defer sys.Shutdown()
			stripeRegistry(sys, tt.buckets)

			if got, want := len(sys.ProcessRegistry.LocalPIDs.LocalPIDs), max(tt.buckets, 1); got != want {
				t.Fatalf("registry has %d buckets, want %d", got, want)
			}
			// What protoactor registered at start is still found.
			if p, ok := sys.ProcessRegistry.GetLocal("eventstream"); !ok || p == sys.DeadLetter {
				t.Fatal("the event stream's process was lost")
			}
			// Actors spawned afterwards are found, by PID and by name.
			pid, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return echo{} }), "echo")
			if err != nil {
				t.Fatalf("spawn: %v", err)
			}
			got, err := sys.Root.RequestFuture(actor.NewPID(pid.Address, "echo"), "ping", 30*time.Second).Result()
			if err != nil || got != "ping" {
				t.Fatalf("request: %v, %v; want ping", got, err)
			}
			if err := sys.Root.StopFuture(pid).Wait(); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if _, ok := sys.ProcessRegistry.GetLocal("echo"); ok {
				t.Fatal("a stopped actor is still registered")
			}
		})
	}
}

// TestStripedRegistryForgetsStoppedActors checks what the striping is for:
// the memory the registry keeps follows the actors alive at once, not the
// number ever spawned. Over the 40,000 spawns below the heap grows by about
// 9 MiB with protoactor's own 1,024 buckets, and by under 1 MiB with 32.
func TestStripedRegistryForgetsStoppedActors(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns 40,000 actors")
	}
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	stripeRegistry(sys, 32)
	props := actor.PropsFromProducer(func() actor.Actor { return echo{} })

	const rounds, batch = 40, 1000
	pids := make([]*actor.PID, batch)
	churn := func() {
		for range rounds {
			for i := range pids {
				pids[i] = sys.Root.Spawn(props)
			}
			for _, pid := range pids {
				if err := sys.Root.StopFuture(pid).Wait(); err != nil {
					t.Fatalf("stop: %v", err)
				}
			}
		}
	}
	before := heap()
	churn()
	clear(pids) // a PID caches its process: the last batch would stay reachable
	grew := heap() - before
	t.Logf("the heap grew by %d bytes", grew)
	const limit = 3 << 20
	if grew > limit {
		t.Errorf("after %d actors spawned and stopped, %d at once, the heap grew by %d bytes, want at most %d", rounds*batch, batch, grew, limit)
	}
}
