package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/actors/clusterpb"
	"github.com/agent-server/agent-server/core"
)

// This file owns remote delivery in cluster mode.
//
// Sockets stay on the node that accepted them. On each node, one relay per
// conversation holds that node's sockets (a fanout, the same code the
// conversation actor uses on a single node) and subscribes to the
// conversation's owner, wherever placement activated it. The owner sends
// each durable event once to every relay, as its sealed bytes (Events),
// never once per socket and never re-encoded; the relay hands them to its
// sockets through their outbound queues. A relay tracks the last Seq it
// delivered and drops what it has seen; when it sees a gap, or its owner
// goes away (the remote watch reports it terminated, or the owner says it
// is closing, e.g. fenced), it reads what it missed from the store by Seq
// and subscribes again, to whichever activation owns the conversation now,
// the way centrifuge recovers by offset and epoch. No client sees an error.
//
// Posts and commands from this node (a socket's messages, REST) go to the
// owner as calls (placement.call), each post carrying an idempotency key
// (the client's, or one made here), and each runtime's publish one made
// here, so that a retry (a slow answer, a new owner) never stores twice.
// An agent runtime's socket is the exception to the fan-out: its relay
// registers it with the owner, which sends it its
// frames (RuntimeFrame) as to a local runtime, and watches that relay: a
// relay that goes away takes its runtime with it, as a dropped socket does.

// relayIdle is how long a relay with no socket stays subscribed.
const relayIdle = 30 * time.Second

// A relay's subscription is a lease it renews. An owner forgets a relay
// when protoactor reports the relay's node terminated, which a dropped
// connection between two live nodes also does; nothing tells the relay.
// So a relay with sockets subscribes again every half heartbeat_expiration
// (renewals are idempotent at the owner): it is registered again, learns
// where the log is durable, and reads what it missed from the store.
func (r *relay) renewEvery() time.Duration {
	if r.sys.placement == nil {
		return 5 * time.Second
	}
	return max(r.sys.placement.cfg.HeartbeatExpiration/2, time.Second)
}

// renewSubscription tells a relay, from its timer, to renew its lease.
type renewSubscription struct{}

// IgnoreDeadLetterLogging: the timer may fire after the relay stopped.
func (*renewSubscription) IgnoreDeadLetterLogging() {}

// ownerCaller calls a conversation's owner, wherever placement activated
// it: placement.call in cluster mode.
type ownerCaller interface {
	call(ctx context.Context, conversationID string, msg func(retry bool) proto.Message) (any, error)
}

// relay is one node's stand-in for a conversation in cluster mode.
type relay struct {
	sys      *System
	owners   ownerCaller // how Subscribe and AttachRuntime reach the owner
	id       string
	fan      *fanout
	owner    *actor.PID // the activation it is subscribed to; nil while subscribing
	asking   bool       // a Subscribe call is under way
	durable  uint64     // the last Seq delivered to the fanout
	state    []byte     // the conversation as a full_state body, from the owner
	stateAt  stateStamp // which of the owner's states state is
	ready    bool       // subscribed at least once: state is known
	waiting  []*attachConnection
	buffer   []*clusterpb.Event  // events past a gap, waiting for its read
	early    []*clusterpb.Events // events that came before the first Subscribed
	filling  bool                // a gap's read from the store is under way
	fillTo   uint64              // the Seq the log is known to be durable through
	runtimes map[string]Transport
	// forwarding counts, by connection, a runtime's requests on their way
	// to the owner through placement; detachAfter holds the connection of
	// a runtime socket gone meanwhile, whose DetachRuntime through
	// placement waits for them (forwardDone): sent alongside, it could
	// overtake a finished run's last state update, and report it lost.
	forwarding  map[string]int
	detachAfter map[string]*actor.PID
	gone        *core.Disconnect // the conversation was deleted: refuse everything
	idleAt      *time.Timer
	renewAt     *time.Timer
	renewing    bool // the Subscribe under way renews a lease
	active      time.Time
	received    uint64 // messages the registry routed here
}

func newRelay(s *System, id string) *relay {
	return &relay{sys: s, owners: s.placement, id: id, fan: newFanout(id, s.store, s.log, s.metrics), runtimes: make(map[string]Transport),
		forwarding: make(map[string]int), detachAfter: make(map[string]*actor.PID)}
}

// forwardDone tells a relay that a request of its runtime connection Conn
// has been answered (forwardVia).
type forwardDone struct{ Conn *actor.PID }

// relaySubscribed reports a Subscribe call's outcome to its relay.
// Refused says the owner answered Err itself (it has no conversation),
// rather than the call failing on the way.
type relaySubscribed struct {
	Res     *clusterpb.Subscribed
	Err     error
	Refused bool
}

// relayRetry tells a relay, from its own timer, to try again what failed:
// subscribing, or reading a gap.
type relayRetry struct{}

// IgnoreDeadLetterLogging: the timer may fire after the relay stopped.
func (*relayRetry) IgnoreDeadLetterLogging() {}

// gapRead reports the read of a gap in a relay's log, from the store.
type gapRead struct {
	From   uint64
	Events []*core.Event
	Err    error
}

// runtimeAttachedRemote reports an AttachRuntime call's outcome.
type runtimeAttachedRemote struct {
	Attach *attachConnection
	Err    error
}

// Receive handles the relay's messages.
func (r *relay) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *checkIdle, *renewSubscription, *relayRetry, *relaySubscribed, *gapRead:
		// its own timers, retries and reads are not activity: a relay
		// whose owner never answers still goes idle
	default:
		r.active = time.Now()
	}
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.subscribe(ctx)
		r.armIdle(ctx)
		r.armRenew(ctx)
	case *renewSubscription:
		r.renew(ctx)
	case *routed:
		r.received++
		r.handle(ctx, m.Msg, m.Sender)
	case *relaySubscribed:
		r.subscribed(ctx, m)
	case *clusterpb.Events:
		r.events(ctx, m)
	case *relayRetry:
		r.subscribe(ctx)
		r.fill(ctx, r.fillTo)
	case *clusterpb.Closing:
		r.closing(ctx, m)
	case *clusterpb.RuntimeFrame:
		r.runtimeFrame(ctx, m)
	case *actor.Terminated:
		if r.owner != nil && m.Who.Equal(r.owner) {
			r.sys.log.Info("cluster: the owner of a conversation went away; attaching again", "conversation", r.id, "owner", m.Who.Address)
			r.ownerLost(ctx)
		}
	case *gapRead:
		r.gapFilled(ctx, m)
	case *runtimeAttachedRemote:
		r.runtimeAttached(ctx, m)
	case *replayResolved:
		r.fan.resolved(ctx, m, r.durable)
	case *replayRead:
		r.fan.readDone(ctx, m, r.durable)
	case *resumeReplay:
		r.fan.resumed(ctx, r.durable)
	case *checkIdle:
		r.idle(ctx)
	case *actor.Stopping:
		r.stopping(ctx)
	default:
		r.handle(ctx, ctx.Message(), ctx.Sender())
	}
}

// handle takes a conversation-addressed message from this node.
func (r *relay) handle(ctx actor.Context, msg any, sender *actor.PID) {
	switch m := msg.(type) {
	case *attachConnection:
		r.attach(ctx, m)
	case *detachConnection:
		r.fan.remove(m.Conn)
		r.waiting = slices.DeleteFunc(r.waiting, func(a *attachConnection) bool { return a.Conn.Equal(m.Conn) })
		if _, ok := r.runtimes[m.Conn.Id]; ok {
			delete(r.runtimes, m.Conn.Id)
			r.runtimeGone(ctx, m.Conn)
		}
	case *runtimeReplied:
		r.toOwner(ctx, &clusterpb.Command{Command: &clusterpb.Command_Reply{Reply: &clusterpb.RuntimeReply{
			Conn: refOf(m.Conn), Id: m.ID, Status: int32(m.Reply.Status), Body: m.Reply.Body}}})
	case *forwardDone:
		id := m.Conn.Id
		if r.forwarding[id]--; r.forwarding[id] <= 0 {
			delete(r.forwarding, id)
			if conn, ok := r.detachAfter[id]; ok {
				delete(r.detachAfter, id)
				r.detachThroughPlacement(conn)
			}
		}
	case addressed:
		var done func()
		if _, ok := r.runtimes[senderID(sender)]; ok {
			r.forwarding[sender.Id]++
			self, root := ctx.Self(), ctx.ActorSystem().Root
			done = func() { root.Send(self, &forwardDone{Conn: sender}) }
		}
		r.sys.forwardVia(ctx, r.owner, m, sender, done)
	}
}

// senderID is the ID of sender, "" for none.
func senderID(sender *actor.PID) string {
	if sender == nil {
		return ""
	}
	return sender.Id
}

// attach subscribes a socket of this node: a client joins the fanout once
// the relay knows the conversation's state; a runtime is registered with
// the owner.
func (r *relay) attach(ctx actor.Context, m *attachConnection) {
	switch {
	case r.gone != nil:
		m.Transport.Close(*r.gone)
		ctx.Send(m.Conn, &closeConnection{Reason: *r.gone})
	case m.Runtime:
		r.runtimes[m.Conn.Id] = m.Transport
		self, root, p, id := ctx.Self(), ctx.ActorSystem().Root, r.owners, r.id
		at := &clusterpb.AttachRuntime{Relay: refOf(self), Conn: refOf(m.Conn), ReplayMode: int32(m.Replay.Mode), AfterId: m.Replay.AfterID}
		if !m.Replay.Since.IsZero() {
			at.SinceUnixMicro = m.Replay.Since.UnixMicro()
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), attachTimeout)
			defer cancel()
			res, err := p.call(ctx, id, same(at))
			if err == nil {
				if r, ok := res.(*clusterpb.Result); ok && r.Error != nil {
					err = decodeError(r.Error)
				}
			}
			root.Send(self, &runtimeAttachedRemote{Attach: m, Err: err})
		}()
	case !r.ready:
		r.waiting = append(r.waiting, m)
		r.subscribe(ctx) // unless under way: an owner's refusal stopped asking
	case r.fan.len() >= r.sys.limits.SubscribersPerConversation:
		m.Transport.Close(core.DisconnectTooMany)
		ctx.Send(m.Conn, &closeConnection{Reason: core.DisconnectTooMany})
	default:
		f, err := frame(core.KindStateUpdate, r.state)
		if err != nil || !m.Transport.Send(f) {
			return
		}
		r.fan.subscribe(ctx, m, r.durable)
		ctx.Send(m.Conn, &connectionAttached{Conversation: ctx.Self()})
	}
}

// subscribe asks the conversation's owner, wherever it is, to send this
// relay its durable events after the last one delivered.
func (r *relay) subscribe(ctx actor.Context) {
	if r.asking || r.owner != nil || r.gone != nil {
		return
	}
	r.ask(ctx)
}

// armRenew schedules the next renewal of the relay's lease.
func (r *relay) armRenew(ctx actor.Context) {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	r.renewAt = time.AfterFunc(r.renewEvery(), func() { root.Send(self, &renewSubscription{}) })
}

// renew subscribes again to the owner it has, while it has sockets.
func (r *relay) renew(ctx actor.Context) {
	r.armRenew(ctx)
	if r.asking || r.owner == nil || r.gone != nil || (r.fan.len() == 0 && len(r.runtimes) == 0) {
		return
	}
	r.renewing = true
	r.ask(ctx)
}

// ask sends the Subscribe call, off the mailbox.
func (r *relay) ask(ctx actor.Context) {
	r.asking = true
	self, root, p, id := ctx.Self(), ctx.ActorSystem().Root, r.owners, r.id
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), attachTimeout)
		defer cancel()
		m := &relaySubscribed{}
		res, err := p.call(ctx, id, same(&clusterpb.Subscribe{Relay: refOf(self)}))
		switch v := res.(type) {
		case *clusterpb.Subscribed:
			m.Res = v
		case *clusterpb.Result:
			m.Err, m.Refused = errors.New("subscribe: the owner answered no error and no subscription"), true
			if v.Error != nil {
				m.Err = decodeError(v.Error)
			}
		default:
			m.Err = err
			if err == nil {
				m.Err = fmt.Errorf("subscribe: unexpected answer %T", res)
			}
		}
		root.Send(self, m)
	}()
}

// subscribed takes the owner's answer: the state, where its log is durable
// (anything this relay has not delivered up to there is read from the
// store), and whom to watch. A renewal that finds another owner
// unsubscribes from the one it had, which would otherwise keep serving a
// relay that no longer follows it (and stay busy, never passivating).
// Waiting sockets attach now, then the events that came before the first
// answer are taken.
func (r *relay) subscribed(ctx actor.Context, m *relaySubscribed) {
	r.asking = false
	renewal := r.renewing
	r.renewing = false
	switch {
	case errors.Is(m.Err, core.ErrNotFound):
		r.deleted(ctx, core.DisconnectNotFound)
		return
	case m.Err != nil && renewal && r.owner != nil:
		return // the owner it has stays; the next renewal, or its loss, tells
	case m.Refused:
		// The owner could not load the conversation (the store is
		// unavailable): the sockets waiting are closed as on a single node
		// (1013, 1011), and the next socket asks again. A relay that was
		// following the log has sockets that a new owner must serve: it
		// asks again until one can (the store is back).
		r.sys.log.Warn("cluster: a conversation's owner refused a subscription", "conversation", r.id, "err", m.Err)
		r.refuseWaiting(ctx, goneDisconnect(m.Err))
		if r.ready {
			r.retryLater(ctx)
		}
		return
	case m.Err != nil:
		r.sys.log.Warn("cluster: subscribe to a conversation's owner failed; retrying", "conversation", r.id, "err", m.Err)
		r.retryLater(ctx)
		return
	}
	if owner := pidOf(m.Res.Owner); r.owner == nil || owner == nil || !owner.Equal(r.owner) {
		if r.owner != nil { // a renewal found another owner
			r.toOwner(ctx, &clusterpb.Unsubscribe{Relay: refOf(ctx.Self())})
			r.dropOwner(ctx)
		}
		if r.owner = owner; owner != nil {
			ctx.Watch(owner)
		}
	}
	if !r.ready {
		// The first subscription: no socket here follows the log yet, so
		// it starts where the owner's log is durable.
		r.durable = max(r.durable, m.Res.Durable)
	}
	r.takeState(m.Res.State, stateStamp{m.Res.Epoch, m.Res.StateVersion})
	r.ready = true
	r.fill(ctx, m.Res.Durable)
	waiting := r.waiting
	r.waiting = nil
	for _, a := range waiting {
		r.attach(ctx, a)
	}
	early := r.early
	r.early = nil
	for _, e := range early {
		r.events(ctx, e)
	}
}

// retryLater sends the relay relayRetry after a short wait.
func (r *relay) retryLater(ctx actor.Context) {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	time.AfterFunc(200*time.Millisecond, func() { root.Send(self, &relayRetry{}) })
}

// events takes durable events from the owner: in order, the ones already
// delivered dropped; a gap is read from the store first, the events past it
// waiting meanwhile. Events can come before the first Subscribed (the owner
// registers the relay as it answers, and the answer travels through a
// future): they wait for it, as the relay does not know yet where the log
// it follows starts, and would otherwise read it all from Seq 1. At most
// replayPage messages wait (the oldest go first): a gap they leave is read
// from the store once the answer comes.
func (r *relay) events(ctx actor.Context, m *clusterpb.Events) {
	if !r.ready {
		if len(r.early) >= replayPage {
			r.early = r.early[1:]
		}
		r.early = append(r.early, m)
		return
	}
	if len(m.State) > 0 {
		r.takeState(m.State, stateStamp{m.Epoch, m.StateVersion})
	}
	delivered := 0
	for _, e := range m.Events {
		switch {
		case e.Seq <= r.durable:
		case e.Seq == r.durable+1 && !r.filling:
			r.deliver(&core.Event{Seq: e.Seq, Raw: e.Raw, ID: e.GetId()})
			delivered++
		default:
			r.buffer = append(r.buffer, e)
		}
	}
	r.sys.metrics.remoteDelivered(delivered)
	if len(r.buffer) > 0 && !r.filling {
		r.fill(ctx, r.buffer[0].Seq-1)
	}
}

// stateStamp orders an owner's states: by its epoch (each activation
// takes a new one), then by its version of the state. The zero stamp is
// an older node's, which sends none.
type stateStamp struct{ epoch, version uint64 }

// takeState takes a state the owner sent, unless it is older than the one
// the relay has. A renewal's answer travels through a future while the
// owner's Events come straight, so a newer state can arrive first; taken
// in arrival order, the older one would stay until the next change. A
// state without a stamp is taken as it comes.
func (r *relay) takeState(state []byte, at stateStamp) {
	if at != (stateStamp{}) && at.before(r.stateAt) {
		return
	}
	r.state, r.stateAt = state, at
}

// before reports whether s is an older state than o.
func (s stateStamp) before(o stateStamp) bool {
	return s.epoch < o.epoch || s.epoch == o.epoch && s.version < o.version
}

// deliver hands one event to the fanout, in order.
func (r *relay) deliver(ev *core.Event) {
	r.durable = ev.Seq
	r.fan.deliver(ev)
}

// fill reads the log after what was delivered, through through, from the
// store (the gap repair), off the mailbox: a page (replayPage) at a time,
// as replays read, however long the gap; gapFilled reads the next.
func (r *relay) fill(ctx actor.Context, through uint64) {
	r.fillTo = max(r.fillTo, through)
	if r.filling || r.fillTo <= r.durable {
		return
	}
	r.filling = true
	self, root, store, id, from := ctx.Self(), ctx.ActorSystem().Root, r.sys.store, r.id, r.durable+1
	n := int(min(r.fillTo-r.durable, replayPage))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), storeReadTimeout)
		evs, err := store.Events(ctx, id, from-1, n)
		cancel()
		root.Send(self, &gapRead{From: from, Events: evs, Err: err})
	}()
}

// gapFilled delivers what the store held of the gap, then what waited past
// it; a gap still open (its next page, or the store lagging) is read again.
// A gap counts as repaired once, when a read closes it.
func (r *relay) gapFilled(ctx actor.Context, m *gapRead) {
	r.filling = false
	if m.Err != nil {
		r.sys.log.Warn("cluster: read a gap of a conversation's log; retrying", "conversation", r.id, "err", m.Err)
		r.retryLater(ctx)
		return
	}
	repaired := false
	for _, ev := range m.Events {
		if ev.Seq == r.durable+1 {
			r.deliver(ev)
			repaired = true
		}
	}
	if repaired && r.durable >= r.fillTo {
		r.sys.metrics.gapRepaired()
	}
	buf := r.buffer
	r.buffer = nil
	r.events(ctx, &clusterpb.Events{Events: buf})
	r.fill(ctx, r.fillTo) // the store may lag what the owner said is durable: read again
	r.fan.pumpAll(ctx, r.durable)
}

// closing takes the owner's notice that its activation is going away: a
// deleted conversation closes the sockets; otherwise the relay attaches
// again to whichever activation owns the conversation now. A notice from
// an activation the relay no longer follows is stale: a renewal moved it
// to a new owner, or it lost that one and is attaching again already
// (its Terminated, a system message, overtakes the Closing sent before
// it). Taking it would drop the live owner and close the runtime sockets
// registered with it.
func (r *relay) closing(ctx actor.Context, m *clusterpb.Closing) {
	if m.Code == core.CloseConversationNotFnd {
		r.deleted(ctx, core.DisconnectNotFound)
		return
	}
	if from := pidOf(m.Owner); from != nil && (r.owner == nil || !from.Equal(r.owner)) {
		return
	}
	r.ownerLost(ctx)
}

// ownerLost drops the owner and subscribes again.
func (r *relay) ownerLost(ctx actor.Context) {
	r.dropOwner(ctx)
	r.subscribe(ctx)
}

// dropOwner stops following the owner and closes the runtime sockets
// registered with it with 1012: they reconnect (with after_id) to register
// with the next. Their replies would otherwise go to the next owner, which
// does not know them.
//
// Each is also detached (runtimeGone), from the owner it had, which may
// live on (a renewal found another), and from the next, which its attach
// may have reached: either would otherwise keep it as the runtime and
// refuse the runtime's reconnection with 1013.
func (r *relay) dropOwner(ctx actor.Context) {
	for id, t := range r.runtimes {
		t.Close(disconnectOwnerMoved)
		delete(r.runtimes, id)
		r.runtimeGone(ctx, actor.NewPID(ctx.Self().Address, id)) // connections are actors of this node
	}
	if r.owner != nil {
		ctx.Unwatch(r.owner)
		r.owner = nil
	}
}

// disconnectOwnerMoved closes a runtime's socket when its conversation's
// owner changes: the runtime reconnects and resumes with after_id.
var disconnectOwnerMoved = core.Disconnect{Code: 1012, Reason: "Conversation moved to another node; reconnect"}

// deleted closes every socket with d and refuses new ones.
func (r *relay) deleted(ctx actor.Context, d core.Disconnect) {
	r.gone = &d
	r.fan.closeAll(ctx, d)
	r.refuseWaiting(ctx, d)
	for id, t := range r.runtimes {
		t.Close(d)
		delete(r.runtimes, id)
	}
}

// refuseWaiting closes the sockets waiting for the first subscription
// with d.
func (r *relay) refuseWaiting(ctx actor.Context, d core.Disconnect) {
	for _, a := range r.waiting {
		a.Transport.Close(d)
		ctx.Send(a.Conn, &closeConnection{Reason: d})
	}
	r.waiting = nil
}

// runtimeAttached completes a runtime socket's registration with the owner.
// A socket that left while its attach was on its way (or was closed) is
// detached again, through placement as its attach went: the DetachRuntime
// sent when it left may have reached the owner before the attach.
func (r *relay) runtimeAttached(ctx actor.Context, m *runtimeAttachedRemote) {
	t, ok := r.runtimes[m.Attach.Conn.Id]
	if !ok {
		// Not for a refused attach (nothing to detach), nor on a deleted
		// conversation (placement would start it again to answer).
		if m.Err == nil && r.gone == nil {
			r.detachThroughPlacement(m.Attach.Conn)
		}
		return
	}
	if m.Err != nil {
		d := core.DisconnectUnavailable
		if errors.Is(m.Err, core.ErrNotFound) {
			d = core.DisconnectNotFound
		}
		delete(r.runtimes, m.Attach.Conn.Id)
		t.Close(d)
		ctx.Send(m.Attach.Conn, &closeConnection{Reason: d})
		return
	}
	ctx.Send(m.Attach.Conn, &connectionAttached{Conversation: ctx.Self()})
}

// runtimeFrame hands the owner's frame to this node's runtime socket.
func (r *relay) runtimeFrame(ctx actor.Context, m *clusterpb.RuntimeFrame) {
	conn := pidOf(m.Conn)
	t, ok := r.runtimes[conn.Id]
	if !ok {
		return
	}
	if m.CloseCode != 0 {
		d := core.Disconnect{Code: uint16(m.CloseCode), Reason: m.CloseReason}
		t.Close(d)
		ctx.Send(conn, &closeConnection{Reason: d})
		delete(r.runtimes, conn.Id)
		// The owner closed it (a replay that failed, a refusal) without
		// always letting it go: its later detach finds nothing here, so
		// the owner is told now. For a runtime it let go, this does
		// nothing.
		r.runtimeGone(ctx, conn)
		return
	}
	t.Send(m.Frame)
}

// runtimeGone tells the owner that a runtime socket of this relay is gone,
// so that the next runtime may attach: straight to the owner the relay
// follows, if any, behind what the socket sent, and through placement, as
// the socket's attach went: while the conversation moves, that may have
// reached another activation than the one the relay follows. Through
// placement it goes once the socket's requests on their way there are
// answered.
func (r *relay) runtimeGone(ctx actor.Context, conn *actor.PID) {
	r.toOwner(ctx, &clusterpb.DetachRuntime{Conn: refOf(conn)})
	if r.forwarding[conn.Id] > 0 {
		r.detachAfter[conn.Id] = conn
		return
	}
	r.detachThroughPlacement(conn)
}

// detachThroughPlacement sends DetachRuntime for conn to whichever
// activation owns the conversation now, off the mailbox. It is idempotent:
// an activation that does not have the runtime answers and does nothing.
func (r *relay) detachThroughPlacement(conn *actor.PID) {
	p, id, log, msg := r.owners, r.id, r.sys.log, &clusterpb.DetachRuntime{Conn: refOf(conn)}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), attachTimeout)
		defer cancel()
		if _, err := p.call(ctx, id, same(msg)); err != nil {
			log.Warn("cluster: detach a runtime from its conversation's owner", "conversation", id, "err", err)
		}
	}()
}

// toOwner sends the owner a message that needs no answer.
func (r *relay) toOwner(ctx actor.Context, msg any) {
	if r.owner != nil {
		ctx.Send(r.owner, msg)
	}
}

func (r *relay) armIdle(ctx actor.Context) {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	r.idleAt = time.AfterFunc(relayIdle, func() { root.Send(self, &checkIdle{}) })
}

// idle offers the registry to stop a relay that has had no socket for
// relayIdle.
func (r *relay) idle(ctx actor.Context) {
	if quiet := time.Since(r.active); quiet < relayIdle || r.fan.len() > 0 || len(r.runtimes) > 0 || len(r.waiting) > 0 || len(r.detachAfter) > 0 {
		r.armIdle(ctx)
		return
	}
	r.armIdle(ctx)
	ctx.Send(ctx.Parent(), &conversationIdle{ConversationID: r.id, PID: ctx.Self(), Received: r.received})
}

func (r *relay) stopping(ctx actor.Context) {
	if r.idleAt != nil {
		r.idleAt.Stop()
	}
	if r.renewAt != nil {
		r.renewAt.Stop()
	}
	r.fan.stop()
	r.toOwner(ctx, &clusterpb.Unsubscribe{Relay: refOf(ctx.Self())})
	r.fan.closeAll(ctx, core.DisconnectInternalError)
	for _, t := range r.runtimes {
		t.Close(core.DisconnectInternalError)
	}
}

// forward sends a conversation-addressed request from this node to the
// conversation's owner, off the mailbox, and hands the answer to sender. A
// post carries an idempotency key, made here when the client gave none,
// and a publish one made here, so that a retry (after a timeout, or
// through a new owner) never stores twice.
func (s *System) forward(ctx actor.Context, m addressed, sender *actor.PID) {
	s.forwardVia(ctx, nil, m, sender, nil)
}

// nodeKey makes an idempotency key for a request this node forwards; "~"
// keeps it apart from clients' keys, which may not start with it.
func nodeKey() string { return "~" + uuid.NewString() }

// forwardVia is forward with, when owner is not nil, the first attempt
// sent from the mailbox straight to owner, the activation a relay is
// subscribed to: a relay's sockets' posts and events then reach the owner
// in the order they were sent (protoactor's remote keeps the order of one
// sender's messages to one node), as they do on a single node. Only when
// that attempt fails (the owner went away, moved or was fenced) does the
// request go through placement, retried, and may then overtake what was
// sent after it. done, when not nil, is called once the request has its
// answer (or has failed).
func (s *System) forwardVia(ctx actor.Context, owner *actor.PID, m addressed, sender *actor.PID, done func()) {
	if k, ok := m.(keyedRequest); ok {
		m = k.withNodeKey()
	}
	root, p := ctx.ActorSystem().Root, s.placement
	answer := func(msg any) {
		if sender != nil {
			root.Send(sender, msg)
		}
	}
	// The owner answers some requests only after a wait of their own: each
	// attempt allows for it, so that a slow answer is not asked again.
	var wait time.Duration
	switch c := m.(type) {
	case *runConversation:
		wait = c.Wait
	case *rejectPending:
		wait = c.Wait
	case *askRuntime:
		wait = c.Wait + c.Timeout
	}
	timeout, attempt := requestTimeout+wait, callAttempt+wait
	var first *actor.Future
	if owner != nil {
		if msg, err := toOwner(m, false); err == nil {
			first = ctx.RequestFuture(owner, msg, attempt)
		}
	}
	go func() {
		cctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if done != nil {
			defer done()
		}
		var res any
		var err, convErr error
		if first != nil {
			res, err = first.Result()
		}
		if first == nil || err != nil || res == nil || fenced(res) {
			res, err = p.callEach(cctx, m.conversationID(), attempt, func(retry bool) proto.Message {
				msg, err := toOwner(m, retry || first != nil)
				convErr = err
				return msg
			})
		}
		switch r, ok := res.(*clusterpb.Result); {
		case convErr != nil:
			answer(&commandFailed{Err: convErr})
		case err == nil && ok:
			answer(answerOf(m, r))
		default:
			if err == nil {
				err = fmt.Errorf("unexpected answer %T", res)
			}
			if pe, ok := m.(*publishEvent); ok {
				answer(&publishFailed{Ref: pe.Ref, Err: err})
				return
			}
			answer(&commandFailed{Err: err})
		}
	}()
}

// The owner's side: the cluster activation of a conversation keeps the
// relays subscribed to it and sends each of them every durable event once.

// relayState is the relays an owner serves, and the remote runtime.
type relayState struct {
	relays   map[string]*actor.PID    // by wireKey
	version  uint64                   // the state version the relays last got
	runtimes map[string]remoteRuntime // by the runtime socket's connection (wireKey)
}

// remoteRuntime is a runtime socket another node holds: the local proxy
// that stands for its connection, and the socket as the conversation sees
// it, through the relay it came by, which the activation watches while it
// holds the runtime.
type remoteRuntime struct {
	proxy     *actor.PID
	transport *remoteTransport
}

// subscribeRelay adds a relay and answers it where the log is durable and
// what the state is: what becomes durable after that reaches it as events;
// what it missed before, it reads from the store. An activation that has
// no conversation (deleted, missing from the store, its load failed)
// answers why, and the relay closes its sockets as a single node would.
func (a *clusterActivation) subscribeRelay(ctx actor.Context, c *conversation, m *clusterpb.Subscribe, sender *actor.PID) {
	if c.gone {
		reply(ctx, sender, &clusterpb.Result{Error: encodeError(c.goneErr)})
		return
	}
	relay := pidOf(m.Relay)
	if a.rs.relays == nil {
		a.rs.relays = make(map[string]*actor.PID)
	}
	if _, ok := a.rs.relays[wireKey(relay)]; !ok {
		a.rs.relays[wireKey(relay)] = relay
		ctx.Watch(relay)
	}
	state, err := c.stateBody()
	if err != nil {
		reply(ctx, sender, &clusterpb.Result{Error: encodeError(err)})
		return
	}
	reply(ctx, sender, &clusterpb.Subscribed{Durable: c.durable, State: state, Epoch: c.epoch, Owner: refOf(ctx.Self()), StateVersion: c.ctl.version})
}

// durable sends every relay the events that just became durable, in one
// message each, with the state when it changed since the last.
func (a *clusterActivation) durable(ctx actor.Context, c *conversation, done []pendingAppend) {
	if len(a.rs.relays) == 0 {
		return
	}
	m := &clusterpb.Events{Events: make([]*clusterpb.Event, len(done))}
	for i, p := range done {
		m.Events[i] = &clusterpb.Event{Seq: p.event.Seq, Raw: p.event.Raw, Id: p.event.ID}
	}
	if c.ctl.version != a.rs.version {
		if state, err := c.stateBody(); err == nil {
			m.State, m.Epoch, m.StateVersion, a.rs.version = state, c.epoch, c.ctl.version, c.ctl.version
		}
	}
	for _, r := range a.rs.relays {
		ctx.Send(r, m)
	}
}

// stopping tells every relay: closed for good (4004), or attach again to
// whichever activation owns the conversation next.
func (a *clusterActivation) stopping(ctx actor.Context, c *conversation, code uint16) {
	m := &clusterpb.Closing{Owner: refOf(ctx.Self())}
	if code == core.CloseConversationNotFnd {
		m.Code, m.Reason = uint32(code), "Conversation not found"
	}
	for _, r := range a.rs.relays {
		ctx.Send(r, m)
	}
	a.rs.relays = nil
}

func (a *clusterActivation) busy() bool { return len(a.rs.relays) > 0 }

// attachRuntime registers a runtime socket another node holds as this
// conversation's runtime subscriber, through a local proxy that stands for
// the socket's connection: the conversation sends it frames and closes as
// to a local one, and the proxy passes them to the relay (RuntimeFrame).
func (a *clusterActivation) attachRuntime(ctx actor.Context, c *conversation, m *clusterpb.AttachRuntime, sender *actor.PID) {
	if c.gone {
		reply(ctx, sender, &clusterpb.Result{Error: encodeError(c.goneErr)})
		return
	}
	conn, relay := pidOf(m.Conn), pidOf(m.Relay)
	if _, ok := a.rs.runtimes[wireKey(conn)]; ok {
		// A retry of an attach that took (placement resends one that went
		// unanswered): answered as the first was. An error would have the
		// relay close the socket, and leave it the owner's runtime.
		reply(ctx, sender, &clusterpb.Result{})
		return
	}
	proxy, err := ctx.SpawnNamed(actor.PropsFromFunc(func(pctx actor.Context) {
		if cl, ok := pctx.Message().(*closeConnection); ok {
			pctx.Send(relay, &clusterpb.RuntimeFrame{Conn: m.Conn, CloseCode: uint32(cl.Reason.Code), CloseReason: cl.Reason.Reason})
			pctx.Stop(pctx.Self())
		}
	}), "runtime-"+conn.Id)
	if err != nil {
		reply(ctx, sender, &clusterpb.Result{Error: encodeError(fmt.Errorf("register the runtime: %w", err))})
		return
	}
	replay := Replay{Mode: ReplayMode(m.ReplayMode), AfterID: m.AfterId}
	if m.SinceUnixMicro != 0 {
		replay.Since = time.UnixMicro(m.SinceUnixMicro).UTC()
	}
	t := &remoteTransport{root: ctx.ActorSystem().Root, relay: relay, conn: m.Conn}
	c.attach(ctx, &attachConnection{ConversationID: c.id, Conn: proxy, Transport: t, Replay: replay, Runtime: true})
	if c.isRuntime(proxy) { // not refused (the socket is closed, and the proxy stops)
		if a.rs.runtimes == nil {
			a.rs.runtimes = make(map[string]remoteRuntime)
		}
		a.rs.runtimes[wireKey(conn)] = remoteRuntime{proxy: proxy, transport: t}
		ctx.Watch(relay)
	}
	reply(ctx, sender, &clusterpb.Result{})
}

// detachRuntime takes the relay's notice that the runtime's socket is gone,
// and answers it (a relay with no owner yet sends it through placement). A
// runtime it does not have (detached already, or attached elsewhere) is
// ignored.
func (a *clusterActivation) detachRuntime(ctx actor.Context, c *conversation, conn *clusterpb.Ref, sender *actor.PID) {
	a.dropRuntime(ctx, c, wireKey(pidOf(conn)))
	reply(ctx, sender, &clusterpb.Result{})
}

// dropRuntime detaches the remote runtime key, as when a local runtime's
// connection detaches: a run in progress is reported lost.
func (a *clusterActivation) dropRuntime(ctx actor.Context, c *conversation, key string) {
	rt, ok := a.rs.runtimes[key]
	if !ok {
		return
	}
	delete(a.rs.runtimes, key)
	c.handle(ctx, &detachConnection{ConversationID: c.id, Conn: rt.proxy}, nil)
	ctx.Stop(rt.proxy)
	a.unwatchRelay(ctx, rt.transport.relay)
}

// relayGone takes the Terminated of a relay the activation watches: its
// node went away, the connection to it dropped, or it stopped. The relay
// is forgotten, and so are the runtime sockets it held, each as its
// DetachRuntime would (the relay can no longer send one): a run in
// progress is reported lost, and the runtime's reconnection, through any
// node, is accepted. Each socket is told to close in case its relay lives
// on behind a dropped connection: the runtime reconnects.
func (a *clusterActivation) relayGone(ctx actor.Context, c *conversation, relay *actor.PID) {
	delete(a.rs.relays, wireKey(relay))
	for key, rt := range a.rs.runtimes {
		if wireKey(rt.transport.relay) == wireKey(relay) {
			rt.transport.Close(disconnectRelayLost)
			a.dropRuntime(ctx, c, key)
		}
	}
}

// disconnectRelayLost closes a runtime's socket whose node the owner lost
// contact with: the runtime reconnects, through any node.
var disconnectRelayLost = core.Disconnect{Code: core.CloseServiceRestart, Reason: "Lost contact with this socket's node; reconnect"}

// unwatchRelay stops watching relay once it neither follows the activation
// nor holds one of its runtimes.
func (a *clusterActivation) unwatchRelay(ctx actor.Context, relay *actor.PID) {
	if a.rs.relays[wireKey(relay)] != nil {
		return
	}
	for _, rt := range a.rs.runtimes {
		if wireKey(rt.transport.relay) == wireKey(relay) {
			return
		}
	}
	ctx.Unwatch(relay)
}

// remoteTransport is a runtime socket on another node, as the conversation
// sees it: frames travel to the socket's relay.
type remoteTransport struct {
	root  *actor.RootContext
	relay *actor.PID
	conn  *clusterpb.Ref
}

// Send hands a frame to the relay; the relay's socket queue bounds it.
func (t *remoteTransport) Send(frame []byte) bool {
	t.root.Send(t.relay, &clusterpb.RuntimeFrame{Conn: t.conn, Frame: frame})
	return true
}

// Close asks the relay to close the socket with d.
func (t *remoteTransport) Close(d core.Disconnect) {
	t.root.Send(t.relay, &clusterpb.RuntimeFrame{Conn: t.conn, CloseCode: uint32(d.Code), CloseReason: d.Reason})
}
