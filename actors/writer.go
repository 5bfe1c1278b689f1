package actors

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// maxWriteBatch bounds the events of one group commit, so one commit's
// latency stays bounded under a flood.
const maxWriteBatch = 8192

// writer is the group commit between the conversation actors and the store.
// Actors enqueue sealed events without waiting; one goroutine takes
// everything queued, writes it with one Store.AppendBatch (one transaction,
// one fsync for the bolt store), and tells each actor, with eventsStored,
// how far its log is now durable. While a commit runs, the next batch
// gathers, so under load a batch holds whatever arrived during one fsync.
type writer struct {
	store   core.Store
	root    *actor.RootContext
	log     *slog.Logger
	metrics *metrics // nil measures nothing

	mu     sync.Mutex
	queue  []writeRequest
	closed bool
	wake   chan struct{} // one slot: something was queued, or close
	done   chan struct{} // closed when run returns
}

// writeRequest is one sealed event of one conversation, and whom to tell.
type writeRequest struct {
	actor          *actor.PID
	conversationID string
	event          *core.Event
	gen            uint64 // the actor's append generation (see conversation.gen)
	epoch          uint64 // the activation's ownership epoch
}

func newWriter(store core.Store, root *actor.RootContext, log *slog.Logger, m *metrics) *writer {
	w := &writer{store: store, root: root, log: log, metrics: m, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w
}

// enqueue queues one event and never blocks. It reports false after close.
func (w *writer) enqueue(r writeRequest) bool {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return false
	}
	w.queue = append(w.queue, r)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// close stops accepting events, writes whatever is queued, and returns once
// the last commit finished or ctx ended.
func (w *writer) close(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run commits batches until close, then drains the queue and returns.
func (w *writer) run() {
	defer close(w.done)
	var batch []writeRequest
	for range w.wake {
		for {
			w.mu.Lock()
			n := min(len(w.queue), maxWriteBatch)
			batch = append(batch[:0], w.queue[:n]...)
			rest := copy(w.queue, w.queue[n:])
			clear(w.queue[rest:])
			w.queue = w.queue[:rest]
			closed := w.closed
			w.mu.Unlock()
			if len(batch) > 0 {
				w.commit(batch)
				clear(batch)
				continue
			}
			if closed {
				return
			}
			break
		}
	}
}

// commit writes one batch. Consecutive events of one conversation become one
// element of the AppendBatch, and each element's actor gets one eventsStored.
func (w *writer) commit(batch []writeRequest) {
	type element struct {
		actor *actor.PID
		last  uint64
		gen   uint64
	}
	appends := make([]core.Append, 0, 8)
	elems := make([]element, 0, 8)
	open := make(map[string]int, 8) // conversation ID -> element taking its events
	for _, r := range batch {
		if i, ok := open[r.conversationID]; ok && elems[i].actor.Equal(r.actor) && elems[i].gen == r.gen && elems[i].last+1 == r.event.Seq {
			appends[i].Events = append(appends[i].Events, r.event)
			elems[i].last = r.event.Seq
			continue
		}
		open[r.conversationID] = len(appends)
		appends = append(appends, core.Append{ConversationID: r.conversationID, Events: []*core.Event{r.event}, Epoch: r.epoch})
		elems = append(elems, element{actor: r.actor, last: r.event.Seq, gen: r.gen})
	}
	start := time.Now()
	errs := w.store.AppendBatch(context.Background(), appends)
	stored, failed := 0, 0
	for i := range elems {
		if errs[i] == nil {
			stored += len(appends[i].Events)
		} else {
			failed += len(appends[i].Events)
		}
	}
	// Counted before anyone is told: a client answered for its append
	// then finds it in the metrics.
	w.metrics.committed(start, len(batch), stored, failed)
	for i, e := range elems {
		w.root.Send(e.actor, &eventsStored{Through: e.last, Gen: e.gen, Err: errs[i]})
	}
}
