package plugins

import (
	"context"
	"fmt"
	"time"

	"github.com/agent-server/agent-server/core"
)

// Admission. Each plugin process takes at most spec.maxInFlight calls at
// once (plugins.max_in_flight): its call slots. The slots belong to the
// process because that is what has a capacity (its cores, its connections
// to an identity provider) and what crashes: a dead process's slots vanish
// with it, a restarted one brings them back. A call goes to the live
// process of the lowest index that has a free slot: process 0 serves, and
// the others stand by warm, taking calls only while it is full or down.
// Filling one process first keeps its batches on the stream large; spread
// over two, the same load cost up to 20% more CPU per call
// (docs/plugins-transport.md).
//
// When every slot of a plugin is busy, the plugin is saturated and a new
// call waits for a slot of that plugin, in arrival order: a slow webhook
// never holds up a header check. The bound on waiting is the host's
// (auth.queue.size calls across every plugin, since what a waiting
// handshake holds, a goroutine and a connection, is the server's), and so
// is the longest wait (auth.queue.max_wait). A call refused by either
// fails at once with core.ErrOverloaded: 503 with Retry-After, never a
// hang until the chain's deadline. A call the cache answers, or that skips
// the plugin, never waits. A call stays in its slot until the process
// answers it, even past its deadline: the plugin is still working on it.

// waiter is a call waiting for a slot.
type waiter struct {
	grant chan grant // buffered: the one grant
}

// grant is a slot on a process, or why there will be none.
type grant struct {
	p   *process
	c   *conn
	err error
}

// acquire reserves a call slot on a live process, waiting for one when
// every process is busy. The caller gives it back with release.
func (i *instance) acquire(ctx context.Context) (*process, *conn, error) {
	if err := ctx.Err(); err != nil { // the caller has gone: no call to send
		return nil, nil, fmt.Errorf("plugin %s: %w", i.name, err)
	}
	h := i.host
	i.mu.Lock()
	if p, c := i.freeLocked(); p != nil {
		p.inFlight++
		i.mu.Unlock()
		return p, c, nil
	}
	if !i.up() {
		i.mu.Unlock()
		return nil, nil, fmt.Errorf("plugin %s: no process is serving", i.name)
	}
	if h.queued.Add(1) > int64(h.queueSize) {
		h.queued.Add(-1)
		i.mu.Unlock()
		i.metrics.rejected(rejectFull)
		return nil, nil, fmt.Errorf("plugin %s: %w: every call slot is busy and auth.queue.size (%d) calls already wait", i.name, core.ErrOverloaded, h.queueSize)
	}
	w := &waiter{grant: make(chan grant, 1)}
	el := i.waiters.PushBack(w)
	i.mu.Unlock()

	start := time.Now()
	timer := time.NewTimer(h.queueMaxWait)
	var g grant
	var granted bool
	select {
	case g = <-w.grant:
		granted = true
	case <-timer.C:
	case <-ctx.Done():
	}
	timer.Stop()
	if !granted {
		i.mu.Lock()
		select {
		case g = <-w.grant: // granted while the timer fired
			granted = true
		default:
			i.waiters.Remove(el)
		}
		i.mu.Unlock()
	}
	h.queued.Add(-1)
	i.metrics.waited(time.Since(start))
	switch {
	case !granted && ctx.Err() != nil:
		return nil, nil, fmt.Errorf("plugin %s: waiting for a call slot: %w", i.name, ctx.Err())
	case !granted:
		i.metrics.rejected(rejectTimeout)
		return nil, nil, fmt.Errorf("plugin %s: %w: no call slot came free within auth.queue.max_wait (%s)", i.name, core.ErrOverloaded, h.queueMaxWait)
	case g.err != nil:
		return nil, nil, g.err
	case ctx.Err() != nil:
		// Granted as the caller's context ended: a call sent now would
		// carry no time left, and hold the slot until the plugin answered
		// it. The slot goes to the next waiter instead.
		i.release(g.p)
		return nil, nil, fmt.Errorf("plugin %s: waiting for a call slot: %w", i.name, ctx.Err())
	}
	return g.p, g.c, nil
}

// release gives a slot of p back and hands it to the oldest waiter.
func (i *instance) release(p *process) {
	i.mu.Lock()
	p.inFlight--
	i.dispatchLocked()
	i.mu.Unlock()
}

// freeLocked returns the live process of the lowest index with a free
// slot, preferring one that has answered every call in time (a process
// that has not may be hung, and the supervisor restarts it only after
// hangGrace); nil when every live process is busy.
func (i *instance) freeLocked() (*process, *conn) {
	var behind *process
	var bc *conn
	for _, p := range i.procs {
		c := p.conn.Load()
		if c == nil || !c.alive() || p.inFlight >= i.spec.maxInFlight {
			continue
		}
		if !c.behind() {
			return p, c
		}
		if behind == nil {
			behind, bc = p, c
		}
	}
	return behind, bc
}

// dispatchLocked hands free slots to waiters, oldest first.
func (i *instance) dispatchLocked() {
	for i.waiters.Len() > 0 {
		p, c := i.freeLocked()
		if p == nil {
			return
		}
		w := i.waiters.Remove(i.waiters.Front()).(*waiter)
		p.inFlight++
		w.grant <- grant{p: p, c: c}
	}
}

// up reports whether any process can take calls.
func (i *instance) up() bool {
	for _, p := range i.procs {
		if c := p.conn.Load(); c != nil && c.alive() {
			return true
		}
	}
	return false
}

// processUp hands the slots of a process that came (back) up to waiters.
func (i *instance) processUp() {
	i.mu.Lock()
	i.dispatchLocked()
	i.mu.Unlock()
}

// processDown fails every waiter when the plugin's last live process went
// down: no slot will come free before a restart, and a plugin that is down
// fails closed at once.
func (i *instance) processDown() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.up() {
		return
	}
	err := fmt.Errorf("plugin %s: no process is serving", i.name)
	for i.waiters.Len() > 0 {
		w := i.waiters.Remove(i.waiters.Front()).(*waiter)
		w.grant <- grant{err: err}
	}
}

// queueDepth returns how many calls wait for a slot of the plugin.
func (i *instance) queueDepth() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.waiters.Len()
}
