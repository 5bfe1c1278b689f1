package plugins

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/config"
)

// A caller whose context has ended gets no slot, whether one was free or
// came free as it ended: a call sent then would carry no time left and
// hold the slot until the plugin answered it. The slot stays free (or goes
// to the next waiter).
func TestEndedCallerGetsNoSlot(t *testing.T) {
	tests := []struct {
		name string
		wait bool // the slot is busy, and comes free as the caller's context ends
	}{
		{"a free slot", false},
		{"a slot granted as the context ends", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := newInstance(NewHost(config.Default(), nil), spec{name: "p", processes: 1, maxInFlight: 1})
			p := i.procs[0]
			p.conn.Store(&conn{}) // a unary process: alive, never behind
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := make(chan error, 1)
			if !tt.wait {
				cancel()
				_, _, err := i.acquire(ctx)
				got <- err
			} else {
				if _, _, err := i.acquire(context.Background()); err != nil {
					t.Fatalf("taking the one slot: %v", err)
				}
				go func() {
					_, _, err := i.acquire(ctx)
					got <- err
				}()
				for i.queueDepth() != 1 {
					time.Sleep(time.Millisecond)
				}
				// Both at once: whichever the waiter sees first, the
				// grant is its own.
				i.mu.Lock()
				cancel()
				p.inFlight--
				i.dispatchLocked()
				i.mu.Unlock()
			}
			if err := <-got; !errors.Is(err, context.Canceled) {
				t.Errorf("acquire: got %v, want the context's error", err)
			}
			i.mu.Lock()
			inFlight := p.inFlight
			i.mu.Unlock()
			if inFlight != 0 {
				t.Errorf("%d slots taken after the caller went, want 0", inFlight)
			}
		})
	}
}
