package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// Idempotent posts. A post may carry an idempotency key (REST's
// Idempotency-Key header, a socket frame's idempotency_key, and, in cluster
// mode, a key the receiving node makes for every post so that it can retry
// through a failed owner). In cluster mode a runtime's publish (but a
// state update, which applying again makes idempotent) carries one too,
// made by the node that forwards it, and is deduplicated the same way;
// its key is the node's alone, so a duplicate is always the same event.
// The key is stored with the event. A retry with the same key in the same
// conversation within IdempotencyWindow appends nothing and is answered as
// the first was; with another body it fails with core.ErrKeyReused; while
// the first is still in flight it waits for its outcome.
//
// The conversation actor keeps what it learned of each key in keys: the
// event appended with it by this activation (pending or durable), or a
// store lookup under way (for a key an earlier activation may have
// stored), with the posts waiting on it. A key is looked up in the store
// only when the post may be a retry (a client's key, or a cluster retry):
// a first attempt under a key this node just made cannot be stored yet.
// A publish's key is forgotten once its event is durable (keyDurable):
// its retries are looked up in the store.

// keyedRequest is a request that may carry an idempotency key: a post
// (appendEvent) or a runtime's publish (publishEvent).
type keyedRequest interface {
	addressed
	// withNodeKey returns it with a key the forwarding node made, if it
	// has none, else itself.
	withNodeKey() addressed
	// keyChecked records that its key was looked up and not found: it is
	// handled as a first attempt.
	keyChecked()
}

func (a *appendEvent) withNodeKey() addressed {
	if a.Key != "" {
		return a
	}
	cp := *a
	cp.Key = nodeKey()
	return &cp
}

func (a *appendEvent) keyChecked() { a.CheckKey = false }

func (p *publishEvent) withNodeKey() addressed {
	if p.Key != "" {
		return p
	}
	cp := *p
	cp.Key = nodeKey()
	return &cp
}

func (p *publishEvent) keyChecked() { p.CheckKey = false }

// IdempotencyWindow is how long a key makes a retry find its first post.
const IdempotencyWindow = 24 * time.Hour

// maxKeys bounds what one activation remembers of keys it appended; older
// ones are found in the store.
const maxKeys = 4096

// keyState is what the conversation knows of one idempotency key.
type keyState struct {
	event     *core.Event // the event posted with the key; nil while resolving
	resolving bool        // the store lookup runs
	waiters   []keyWaiter // duplicates waiting for the first post's outcome
}

// keyWaiter is a post (appendEvent or publishEvent) waiting for the
// outcome of its key's first post.
type keyWaiter struct {
	msg    addressed
	sender *actor.PID
}

// keyResolved reports a key's store lookup, from its goroutine.
type keyResolved struct {
	Key   string
	Event *core.Event // nil: not stored within the window
	Err   error
}

// IgnoreDeadLetterLogging: a lookup may finish after the actor stopped.
func (*keyResolved) IgnoreDeadLetterLogging() {}

// keyCtx is the context key of WithIdempotencyKey.
type keyCtx struct{}

// WithIdempotencyKey returns ctx carrying key for the PostEvent it is
// passed to: request-scoped data, like the header it usually comes from.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyCtx{}, key)
}

// idempotencyKey returns the key WithIdempotencyKey put in ctx, or "".
func idempotencyKey(ctx context.Context) string {
	k, _ := ctx.Value(keyCtx{}).(string)
	return k
}

// keyed handles a post (appendEvent or publishEvent) that carries key;
// check says it may be a retry. It reports true when it took the post
// (answered it, or parked it), false when the post is to be stored now.
func (c *conversation) keyed(ctx actor.Context, key string, check bool, m addressed, sender *actor.PID) bool {
	if c.keys == nil {
		c.keys = make(map[string]*keyState)
	}
	k := c.keys[key]
	switch {
	case k == nil && !check:
		return false
	case k == nil:
		c.keys[key] = &keyState{resolving: true, waiters: []keyWaiter{{m, sender}}}
		self, root, store, id := ctx.Self(), ctx.ActorSystem().Root, c.sys.store, c.id
		go func() {
			ev, err := store.EventByKey(context.Background(), id, key)
			if errors.Is(err, core.ErrNotFound) || (err == nil && time.Since(ev.Timestamp) > IdempotencyWindow) {
				ev, err = nil, nil
			}
			root.Send(self, &keyResolved{Key: key, Event: ev, Err: err})
		}()
		return true
	case k.resolving || k.event.Seq > c.durable:
		k.waiters = append(k.waiters, keyWaiter{m, sender})
		return true
	}
	c.reply(ctx, sender, duplicateAnswer(k.event, m))
	return true
}

// duplicateAnswer is how a post whose key found ev is answered: as the
// first post was when it asks the same, else core.ErrKeyReused.
func duplicateAnswer(ev *core.Event, m addressed) any {
	reused := fmt.Errorf("idempotency key: %w", core.ErrKeyReused)
	if p, ok := m.(*publishEvent); ok {
		// Its key is the forwarding node's, made for this publish alone:
		// the body is not compared again.
		if ev.Source != p.Event.Source || ev.Kind != p.Event.Kind {
			return &publishFailed{Ref: p.Ref, Err: reused}
		}
		return &eventPublished{Ref: p.Ref, Event: ev}
	}
	a := m.(*appendEvent)
	body := ev.Body
	if body == nil {
		body = core.BodyFromRaw(ev.Raw)
	}
	if ev.Source != a.Source || ev.Kind != a.Kind || !bytes.Equal(bytes.TrimSpace(body), bytes.TrimSpace(a.Body)) {
		return &commandFailed{Err: reused}
	}
	return &eventAppended{Event: ev, Duplicate: true}
}

// keyFailure is how a keyed post that stored nothing is answered.
func keyFailure(m addressed, err error) any {
	if p, ok := m.(*publishEvent); ok {
		return &publishFailed{Ref: p.Ref, Err: err}
	}
	return &commandFailed{Err: err}
}

// keyLookedUp takes a key's store lookup: a key found answers every post
// waiting on it; a key not stored (within the window) lets the first of
// them append, the others waiting for its outcome; a lookup that failed
// fails them all.
func (c *conversation) keyLookedUp(ctx actor.Context, m *keyResolved) {
	k := c.keys[m.Key]
	if k == nil || !k.resolving {
		return
	}
	k.resolving = false
	waiters := k.waiters
	k.waiters = nil
	switch {
	case m.Err != nil:
		delete(c.keys, m.Key)
		for _, w := range waiters {
			c.reply(ctx, w.sender, keyFailure(w.msg, fmt.Errorf("look up idempotency key: %w", m.Err)))
		}
	case m.Event != nil:
		k.event = m.Event
		for _, w := range waiters {
			c.reply(ctx, w.sender, duplicateAnswer(m.Event, w.msg))
		}
	default:
		delete(c.keys, m.Key)
		first := waiters[0]
		if k, ok := first.msg.(keyedRequest); ok {
			k.keyChecked()
		}
		c.handle(ctx, first.msg, first.sender)
		if k := c.keys[m.Key]; k != nil {
			k.waiters = append(k.waiters, waiters[1:]...)
		} else { // the first failed at once: the others try in their turn
			for _, w := range waiters[1:] {
				c.handle(ctx, w.msg, w.sender)
			}
		}
	}
}

// keyAppended records the event appended under its key, still pending.
func (c *conversation) keyAppended(ev *core.Event) {
	if ev.IdempotencyKey == "" {
		return
	}
	if len(c.keys) >= maxKeys {
		for key, k := range c.keys { // forget settled keys: the store has them
			if !k.resolving && k.event != nil && k.event.Seq <= c.durable {
				delete(c.keys, key)
			}
		}
	}
	c.keys[ev.IdempotencyKey] = &keyState{event: ev}
}

// keyDurable answers the posts that waited on ev's key, now that ev is
// durable.
func (c *conversation) keyDurable(ctx actor.Context, ev *core.Event) {
	if ev.IdempotencyKey == "" {
		return
	}
	k := c.keys[ev.IdempotencyKey]
	if k == nil || k.event != ev {
		return
	}
	for _, w := range k.waiters {
		c.reply(ctx, w.sender, duplicateAnswer(ev, w.msg))
	}
	k.waiters = nil
	if strings.HasPrefix(ev.IdempotencyKey, "~") && ev.Source != core.SourceUser {
		// A forwarding node's key on a runtime's publish: a retry of it
		// comes with CheckKey and finds the event in the store. Holding
		// every forwarded event here (a runtime's observations, up to
		// maxKeys of them) would cost the owner their whole size. A
		// forwarded post's key stays: a first attempt that comes after
		// its retry (CheckKey unset) is caught here.
		delete(c.keys, ev.IdempotencyKey)
	}
}

// keysFailed forgets the keys of events that were not stored and fails the
// posts that waited on them with err; the clients retry.
func (c *conversation) keysFailed(ctx actor.Context, err error) {
	for key, k := range c.keys {
		if k.event != nil && k.event.Seq > c.durable {
			for _, w := range k.waiters {
				c.reply(ctx, w.sender, keyFailure(w.msg, fmt.Errorf("append: %w", err)))
			}
			delete(c.keys, key)
		}
	}
}
