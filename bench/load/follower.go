package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"
)

// The recovery scenario's sockets: each follows one conversation's log
// through one node and, when that node dies, resumes on a survivor with
// after_id, so that the check can compare what it saw with the log.

// stopFollowers closes every follower's socket for good and waits for
// their goroutines.
func (rt *trial) stopFollowers() {
	for _, f := range rt.followers {
		f.stop()
	}
	rt.wg.Wait()
}

// follower is one socket that records the log events it receives, in
// order, and reconnects with after_id when its node dies.
type follower struct {
	trial *trial
	conv  int

	mu       sync.Mutex
	node     int // the node its socket is on now
	c        *conn
	ids      []string
	probe    string
	probeAt  time.Time
	resumed  time.Time // when its resumed socket got full_state
	stopping bool
	bad      int
}

// open dials the follower's conversation on its node with the replay
// request in replay (nil for none).
func (f *follower) open(ctx context.Context, replay url.Values) error {
	f.mu.Lock()
	node := f.node
	f.mu.Unlock()
	cl, err := newClient(f.trial.n.Servers[node].Addr, f.trial.p.Credentials)
	if err != nil {
		return err
	}
	cred, err := cl.credential(0)
	if err != nil {
		return err
	}
	c, err := cl.dialWith(ctx, f.trial.convs[f.conv], cred, replay, f.receive)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		go c.close()
		return errStopped
	}
	f.c = c
	return nil
}

// errStopped is a socket opened after its follower was stopped.
var errStopped = errors.New("stopped")

// receive records one frame; it runs on the socket's read loop.
func (f *follower) receive(b []byte) {
	var e logEvent
	if err := json.Unmarshal(b, &e); err != nil {
		f.mu.Lock()
		f.bad++
		f.mu.Unlock()
		return
	}
	if e.Kind == "ServerErrorEvent" || (e.Kind == "ConversationStateUpdateEvent" && e.Key == "full_state") {
		return
	}
	f.mu.Lock()
	f.ids = append(f.ids, e.ID)
	if f.probe != "" && f.probeAt.IsZero() && e.text() == f.probe {
		f.probeAt = time.Now()
	}
	f.mu.Unlock()
}

// follow waits for the socket to close and, once its node has been
// killed, resumes on a survivor with after_id; a socket that closes on a
// node that is up is an error (it resumes too, so the check still runs).
func (f *follower) follow(ctx context.Context) {
	defer f.trial.wg.Done()
	for {
		f.mu.Lock()
		c := f.c
		f.mu.Unlock()
		select {
		case <-c.closed:
		case <-ctx.Done():
			return
		}
		f.mu.Lock()
		stopping, node := f.stopping, f.node
		last := ""
		if len(f.ids) > 0 {
			last = f.ids[len(f.ids)-1]
		}
		f.mu.Unlock()
		if stopping {
			return
		}
		killed := f.trial.killedAt.Load()
		if killed == nil || node != f.trial.p.Victim {
			f.trial.errs.add(fmt.Errorf("a socket on node %d closed: %v", node, c.closeErr))
		}
		if !f.resume(ctx, last) {
			return
		}
	}
}

// resume reconnects to another live node, after the last event received
// (every event when none was), until it succeeds or Timeout passes.
func (f *follower) resume(ctx context.Context, afterID string) bool {
	deadline := time.Now().Add(f.trial.p.Timeout)
	f.mu.Lock()
	from := f.node
	f.mu.Unlock()
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		node, err := f.trial.rest.pick(from)
		if err != nil {
			last = err
			break
		}
		f.mu.Lock()
		f.node = node
		f.mu.Unlock()
		replay := url.Values{"after_id": {afterID}}
		if afterID == "" {
			replay = url.Values{"resend_all": {"true"}}
		}
		err = f.open(ctx, replay)
		switch {
		case errors.Is(err, errStopped):
			return false
		case err == nil:
			f.mu.Lock()
			f.resumed = time.Now()
			f.mu.Unlock()
			return true
		}
		last = err
		sleep(ctx, retryWait)
	}
	f.trial.errs.add(fmt.Errorf("a socket of conversation %d could not resume: %v", f.conv, last))
	return false
}

func (f *follower) setProbe(text string) {
	f.mu.Lock()
	f.probe = text
	f.mu.Unlock()
}

func (f *follower) probeTime() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.probeAt
}

func (f *follower) reattachedAt() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resumed
}

func (f *follower) unreadable() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bad
}

func (f *follower) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ids)
}

// stop closes the follower's socket for good.
func (f *follower) stop() {
	f.mu.Lock()
	f.stopping = true
	c := f.c
	f.mu.Unlock()
	if c != nil {
		c.close()
	}
}
