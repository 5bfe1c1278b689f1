package actors

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// maxEarlyFrames bounds the frames a connection keeps while it waits for
// its conversation to attach it.
const maxEarlyFrames = 64

// Why a connection closes when the reason is not one of core's.
var (
	disconnectPeerClosed  = core.Disconnect{Code: core.CloseNormal, Reason: "peer closed"}
	disconnectTooEarly    = core.Disconnect{Code: 1008, Reason: "Too many frames before the conversation was ready"}
	disconnectAttachStall = core.Disconnect{Code: core.CloseTryAgainLater, Reason: "Conversation did not answer"}
	disconnectForbidden   = core.Disconnect{Code: core.CloseForbidden, Reason: "Forbidden"}
	disconnectAuthUnknown = core.Disconnect{Code: core.CloseTryAgainLater, Reason: "Authentication is temporarily unavailable"}
)

// connStage is where a connection actor stands, for the census a shutdown
// reports when its connections do not all stop in time (never a
// credential, only counts).
type connStage int32

// The stages of a connection actor.
const (
	stageAuthenticating connStage = iota // waiting for its first message's chain
	stageAttaching                       // waiting for its conversation
	stageAttached                        // following its conversation
	stageClosing                         // its Stopping handler ran; the supervisor has not seen it stop
	connStages
)

// String names the stage.
func (s connStage) String() string {
	return [connStages]string{"authenticating", "attaching", "attached", "closing"}[s]
}

// Attach describes a socket for ConnectSocket.
type Attach struct {
	Principal      *core.Principal // who authenticated; nil with FirstMessage
	Request        *core.Request   // the credential, re-run by Revalidate; nil exempts the socket
	ConversationID string
	Replay         Replay
	// FirstMessage makes the connection wait, in the authenticating state,
	// for its first frame and run the route's chain on it (first_message)
	// before it attaches. The frame must arrive within AuthTimeout.
	FirstMessage bool
	AuthTimeout  time.Duration
	// Done, when set, is called once as a FirstMessage connection leaves
	// the authenticating state: ok is whether it authenticated.
	Done func(ok bool)
	// Runtime makes the socket its conversation's agent runtime
	// (runtime_conn.go). The principal must carry core.RoleRuntime.
	Runtime bool
	// Audit is who the socket is (route, remote address, conversation,
	// request ID), for the audit records of its first message, expiry and
	// revocation; shared by the connection and the supervisor, never
	// changed. Nil writes those records without it.
	Audit *core.AuditRecord
}

// defaultFirstMessageTimeout is Attach.AuthTimeout when unset.
const defaultFirstMessageTimeout = 10 * time.Second

// ConnectSocket starts the connection actor of an upgraded socket, like
// Connect; with a.FirstMessage it first authenticates the socket by its
// first frame, and it keeps a.Request for Revalidate.
func (s *System) ConnectSocket(t Transport, a Attach) *Conn {
	if s.closing.Load() {
		t.Close(core.DisconnectShutdown)
		a.done(false)
		return &Conn{}
	}
	reply := make(chan any, 1)
	s.root.Send(s.supervisor, &spawnConnection{
		Reply: reply, Transport: t, Principal: a.Principal, ConversationID: a.ConversationID, Replay: a.Replay,
		Request: a.Request, FirstMessage: a.FirstMessage, AuthTimeout: a.AuthTimeout, Done: a.Done, Runtime: a.Runtime, Audit: a.Audit,
	})
	res, err := await(context.Background(), reply, requestTimeout)
	switch m := res.(type) {
	case *connectionSpawned:
		return &Conn{root: s.root, pid: m.PID}
	case *connectionRefused:
		t.Close(m.Reason)
	default:
		s.log.Error("spawn connection actor", "conversation", a.ConversationID, "err", fmt.Errorf("no answer within %s: %w", requestTimeout, err))
		t.Close(core.DisconnectInternalError)
	}
	a.done(false)
	return &Conn{}
}

func (a Attach) done(ok bool) {
	if a.FirstMessage && a.Done != nil {
		a.Done(ok)
	}
}

// connection is the actor of one WebSocket. It starts authenticating (when
// it authenticates by its first frame) or attaching, becomes attached when
// its conversation answers, and stops on any close. Whatever
// stops it, its Stopping handler closes the socket: with the reason it was
// given, or 1011 when it stops because it panicked.
type connection struct {
	sys          *System
	transport    Transport
	principal    *core.Principal
	convID       string
	replay       Replay
	conversation *actor.PID
	attachSent   bool     // attachConnection went to the registry
	early        [][]byte // frames received while attaching
	expiry       *time.Timer
	reason       core.Disconnect // zero until a close is decided
	behavior     actor.Behavior
	bucket       tokenBucket
	runtime      bool              // an agent runtime's socket (runtime_conn.go)
	audit        *core.AuditRecord // who the socket is, for the audit log (audit.go)
	stage        *atomic.Int32     // its connStage, which the supervisor counts (connChild.stage)

	// The authenticating state's.
	request     *core.Request // the handshake; the first frame is added to it
	authTimeout time.Duration
	authTimer   *time.Timer
	attachTimer *time.Timer   // sends attachTimedOut; not protoactor's ReceiveTimeout, whose timer races the mailbox
	authAsked   bool          // the first frame went to the chain
	done        func(ok bool) // nil once called
}

func newConnection(s *System, m *spawnConnection, stage *atomic.Int32) *connection {
	c := &connection{sys: s, transport: m.Transport, principal: m.Principal, convID: m.ConversationID, replay: m.Replay,
		behavior: actor.NewBehavior(), bucket: newTokenBucket(s.limits.MessagesPerSecond, s.limits.MessageBurst), runtime: m.Runtime, audit: m.Audit, stage: stage}
	if c.runtime {
		c.bucket = newTokenBucket(0, 0) // a runtime's events are not a client's chat
	}
	if m.FirstMessage {
		c.request, c.authTimeout, c.done = m.Request, m.AuthTimeout, m.Done
		if c.authTimeout <= 0 {
			c.authTimeout = defaultFirstMessageTimeout
		}
		c.become(stageAuthenticating, c.authenticating)
		return c
	}
	c.become(stageAttaching, c.attaching)
	return c
}

// become switches to state, whose stage the supervisor counts.
func (c *connection) become(stage connStage, state actor.ReceiveFunc) {
	c.stage.Store(int32(stage))
	c.behavior.Become(state)
}

// Receive dispatches to the current state.
func (c *connection) Receive(ctx actor.Context) { c.behavior.Receive(ctx) }

// authenticating waits for the first frame, has the supervisor run the
// chain on it (off every mailbox), and attaches only on Allow. Later frames
// wait in early, unprocessed, until then. A timeout, a deny or a principal
// that may not open the conversation closes with 4001 (4003 for scopes).
func (c *connection) authenticating(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		self, root := ctx.Self(), ctx.ActorSystem().Root
		c.authTimer = time.AfterFunc(c.authTimeout, func() { root.Send(self, &firstMessageTimedOut{}) })
	case *deliverFrame:
		if c.authAsked {
			if len(c.early) >= maxEarlyFrames {
				c.close(ctx, disconnectTooEarly)
				return
			}
			c.early = append(c.early, m.Data)
			return
		}
		c.authAsked = true
		req := *c.request
		req.FirstMessage = m.Data
		deadline := time.Now().Add(authTimeout)
		if t := time.Now().Add(c.authTimeout); t.Before(deadline) {
			deadline = t
		}
		ctx.Send(ctx.Parent(), &authenticate{Request: &req, Deadline: deadline, Conn: ctx.Self()})
	case *authenticated:
		c.sys.auditFirstMessage(c.audit, m.Request, m.Result, c.convID)
		c.authenticated(ctx, m.Result)
	case *firstMessageTimedOut:
		c.sys.auditFirstMessageTimeout(c.audit)
		c.close(ctx, core.DisconnectAuthFailed)
	default:
		c.common(ctx)
	}
}

// authenticated ends the authenticating state with the chain's result.
func (c *connection) authenticated(ctx actor.Context, res core.Result) {
	switch {
	case res.Decision == core.Error:
		c.close(ctx, disconnectAuthUnknown)
	case res.Decision != core.Allow || res.Principal == nil || res.Principal.Expired(time.Now()):
		c.close(ctx, core.DisconnectAuthFailed)
	case !res.Principal.CanAccess(c.convID):
		c.close(ctx, disconnectForbidden)
	default:
		c.authTimer.Stop()
		c.authTimer = nil
		c.finishAuth(true)
		c.principal = res.Principal
		c.become(stageAttaching, c.attaching)
		c.start(ctx)
	}
}

// finishAuth reports the end of the authenticating state, once.
func (c *connection) finishAuth(ok bool) {
	if c.done != nil {
		c.done(ok)
		c.done = nil
	}
}

// attaching waits for the conversation's answer and keeps early frames.
func (c *connection) attaching(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.start(ctx)
	case *connectionAttached:
		c.attachTimer.Stop()
		c.attachTimer = nil
		c.conversation = m.Conversation
		c.become(stageAttached, c.attached)
		early := c.early
		c.early = nil
		for _, f := range early {
			c.handleFrame(ctx, f)
		}
	case *deliverFrame:
		if len(c.early) >= maxEarlyFrames {
			c.close(ctx, disconnectTooEarly)
			return
		}
		c.early = append(c.early, m.Data)
	case *attachTimedOut:
		c.close(ctx, disconnectAttachStall)
	default:
		c.common(ctx)
	}
}

// attached handles the client's frames and the replies to its appends.
func (c *connection) attached(ctx actor.Context) {
	if c.runtime && c.runtimeAnswer(ctx) {
		return
	}
	switch m := ctx.Message().(type) {
	case *deliverFrame:
		c.handleFrame(ctx, m.Data)
	case *eventAppended:
		// The event reaches this client through the broadcast, like every
		// other subscriber.
	case *commandFailed:
		var tooLarge *core.EventTooLargeError
		switch {
		case errors.As(m.Err, &tooLarge):
			c.sendError(core.CodeEventTooLarge, tooLarge.Error())
			return
		case errors.Is(m.Err, core.ErrKeyReused):
			c.sendError(core.CodeKeyReused, "idempotency_key was used with another message in this conversation; nothing was stored")
			return
		case errors.Is(m.Err, core.ErrUnavailable):
			c.sendError(core.CodeUnavailable, "the message was not stored: the store is unavailable; send it again later")
			c.sys.log.Warn("append user message: store unavailable", "conversation", c.convID, "err", m.Err)
			return
		}
		c.sendError(core.CodeInternal, "the message could not be stored")
		c.sys.log.Error("append user message", "conversation", c.convID, "err", m.Err)
	default:
		c.common(ctx)
	}
}

// common handles what every state handles alike.
func (c *connection) common(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *closeConnection:
		c.close(ctx, m.Reason)
	case *peerClosed:
		c.close(ctx, disconnectPeerClosed)
	case *credentialExpired:
		c.sys.auditExpiry(c.audit, c.principal)
		c.close(ctx, core.DisconnectExpired)
	case *actor.Stopping:
		c.stopping(ctx)
	case *crashConnection:
		panic("connection actor: crash requested by a test")
	}
}

func (c *connection) start(ctx actor.Context) {
	if c.runtime && (c.principal == nil || !c.principal.HasRole(core.RoleRuntime)) {
		c.close(ctx, disconnectNotRuntime) // the edge refuses these with 403 first
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	if c.principal != nil && !c.principal.Expiry.IsZero() {
		d := time.Until(c.principal.Expiry)
		if d <= 0 {
			c.close(ctx, core.DisconnectExpired)
			return
		}
		c.expiry = time.AfterFunc(d, func() { root.Send(self, &credentialExpired{}) })
	}
	c.attachTimer = time.AfterFunc(attachTimeout, func() { root.Send(self, &attachTimedOut{}) })
	c.attachSent = true
	ctx.Request(c.sys.registry, &attachConnection{ConversationID: c.convID, Conn: ctx.Self(), Transport: c.transport, Replay: c.replay, Runtime: c.runtime})
}

// handleFrame turns a client frame into an append, an ignored auth frame or
// a ServerErrorEvent for this client alone; the socket stays open.
func (c *connection) handleFrame(ctx actor.Context, data []byte) {
	if c.runtime {
		c.runtimeFrame(ctx, data)
		return
	}
	if !c.bucket.take(time.Now()) {
		c.sendError(core.CodeRateLimited, "too many messages: slow down")
		return
	}
	msg, err := core.ParseClientFrame(data)
	var fe *core.FrameError
	switch {
	case err == nil:
		ctx.Request(c.conversation, &appendEvent{ConversationID: c.convID, Source: core.SourceUser, Kind: core.KindMessage, Body: core.MessageBody(msg), Run: true,
			Key: msg.IdempotencyKey, CheckKey: msg.IdempotencyKey != ""})
	case errors.Is(err, core.ErrAuthFrame):
	case errors.As(err, &fe):
		c.sendError(fe.Code, fe.Detail)
	default:
		c.sendError(core.CodeInvalidMessage, "frame was not understood")
	}
}

func (c *connection) sendError(code, detail string) {
	if frame, err := serverError(code, detail); err == nil {
		c.transport.Send(frame)
	}
}

// close decides the reason and stops the actor; stopping does the rest.
func (c *connection) close(ctx actor.Context, d core.Disconnect) {
	if c.reason == (core.Disconnect{}) {
		c.reason = d
	}
	ctx.Stop(ctx.Self())
}

// stopping runs however the actor stops, a panic included: it closes the
// socket (1011 when no reason was decided), detaches from the conversation
// and cancels the expiry timer.
func (c *connection) stopping(ctx actor.Context) {
	c.stage.Store(int32(stageClosing))
	reason := c.reason
	if reason == (core.Disconnect{}) {
		reason = core.DisconnectInternalError
	}
	c.transport.Close(reason)
	switch {
	case c.conversation != nil:
		ctx.Send(c.conversation, &detachConnection{Conn: ctx.Self()})
	case c.attachSent:
		// The conversation may have subscribed us with its answer still in
		// flight; the registry forwards this behind the attach.
		ctx.Send(c.sys.registry, &detachConnection{ConversationID: c.convID, Conn: ctx.Self()})
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if c.attachTimer != nil {
		c.attachTimer.Stop()
	}
	if c.authTimer != nil {
		c.authTimer.Stop()
	}
	c.finishAuth(false)
}

// tokenBucket limits a client's frames to rate per second with bursts of
// up to burst. A rate of zero or less never limits. Only its actor uses it.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newTokenBucket(rate float64, burst int) tokenBucket {
	b := float64(max(burst, 1))
	return tokenBucket{rate: rate, burst: b, tokens: b}
}

// take spends a token if there is one at now.
func (b *tokenBucket) take(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
