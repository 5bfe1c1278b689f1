package actors

import (
	"errors"
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
)

// connection is the actor of one WebSocket. It starts attaching, becomes
// attached when its conversation answers, and stops on any close. Whatever
// stops it, its Stopping handler closes the socket: with the reason it was
// given, or 1011 when it stops because it panicked.
type connection struct {
	sys          *System
	transport    Transport
	principal    *core.Principal
	convID       string
	replay       Replay
	conversation *actor.PID
	early        [][]byte // frames received while attaching
	expiry       *time.Timer
	reason       core.Disconnect // zero until a close is decided
	behavior     actor.Behavior
}

func newConnection(s *System, m *spawnConnection) *connection {
	c := &connection{sys: s, transport: m.Transport, principal: m.Principal, convID: m.ConversationID, replay: m.Replay,
		behavior: actor.NewBehavior()}
	c.behavior.Become(c.attaching)
	return c
}

// Receive dispatches to the current state.
func (c *connection) Receive(ctx actor.Context) { c.behavior.Receive(ctx) }

// attaching waits for the conversation's answer and keeps early frames.
func (c *connection) attaching(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.start(ctx)
	case *connectionAttached:
		ctx.CancelReceiveTimeout()
		c.conversation = m.Conversation
		ctx.Watch(m.Conversation)
		c.behavior.Become(c.attached)
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
	case *actor.ReceiveTimeout:
		c.close(ctx, disconnectAttachStall)
	default:
		c.common(ctx)
	}
}

// attached handles the client's frames and the replies to its appends.
func (c *connection) attached(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *deliverFrame:
		c.handleFrame(ctx, m.Data)
	case *eventAppended:
		// The event reaches this client through the broadcast, like every
		// other subscriber.
	case *commandFailed:
		c.sendError(core.CodeInternal, "the message could not be stored")
		c.sys.log.Error("append user message", "conversation", c.convID, "err", m.Err)
	case *actor.Terminated:
		if c.conversation != nil && m.Who.Equal(c.conversation) {
			c.close(ctx, core.DisconnectInternalError)
		}
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
		c.close(ctx, core.DisconnectExpired)
	case *actor.Stopping:
		c.stopping(ctx)
	case *crashConnection:
		panic("connection actor: crash requested by a test")
	}
}

func (c *connection) start(ctx actor.Context) {
	if c.principal != nil && !c.principal.Expiry.IsZero() {
		d := time.Until(c.principal.Expiry)
		if d <= 0 {
			c.close(ctx, core.DisconnectExpired)
			return
		}
		self, root := ctx.Self(), ctx.ActorSystem().Root
		c.expiry = time.AfterFunc(d, func() { root.Send(self, &credentialExpired{}) })
	}
	ctx.SetReceiveTimeout(attachTimeout)
	ctx.Request(c.sys.registry, &attachConnection{ConversationID: c.convID, Conn: ctx.Self(), Transport: c.transport, Replay: c.replay})
}

// handleFrame turns a client frame into an append, an ignored auth frame or
// a ServerErrorEvent for this client alone; the socket stays open.
func (c *connection) handleFrame(ctx actor.Context, data []byte) {
	msg, err := core.ParseClientFrame(data)
	var fe *core.FrameError
	switch {
	case err == nil:
		ctx.Request(c.conversation, &appendEvent{ConversationID: c.convID, Source: core.SourceUser, Kind: core.KindMessage, Body: core.MessageBody(msg)})
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
	reason := c.reason
	if reason == (core.Disconnect{}) {
		reason = core.DisconnectInternalError
	}
	c.transport.Close(reason)
	if c.conversation != nil {
		ctx.Send(c.conversation, &detachConnection{Conn: ctx.Self()})
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
}
