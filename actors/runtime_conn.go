package actors

import (
	"encoding/json"
	"errors"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// The connection actor's side of an agent runtime's socket
// (core/runtime.go has the frames, docs/runtime.md the protocol). A runtime
// connection is a connection actor whose frames are publishes and replies
// instead of user messages, not rate-limited, and whose principal must carry
// core.RoleRuntime.

// disconnectNotRuntime closes a runtime socket whose principal is a client's.
var disconnectNotRuntime = core.Disconnect{Code: core.CloseForbidden, Reason: "Forbidden: not an agent runtime credential"}

// runtimeFrame handles one frame from the runtime: a publish goes to the
// conversation (answered eventPublished or publishFailed), a reply to the
// command waiting for it; anything else earns an error frame. The socket
// stays open.
func (c *connection) runtimeFrame(ctx actor.Context, data []byte) {
	var f core.RuntimeFrame
	if err := json.Unmarshal(data, &f); err != nil {
		c.runtimeError("", core.CodeInvalidFrame, `a frame must be a JSON object with "type": publish or reply`)
		return
	}
	switch f.Type {
	case core.FrameTypeAuth:
	case core.FrameTypePublish:
		p, err := core.ParsePublished(f.Event)
		var ee *core.EventError
		if errors.As(err, &ee) {
			c.runtimeError(f.Ref, ee.Code, ee.Detail)
			return
		}
		ctx.Request(c.conversation, &publishEvent{ConversationID: c.convID, Ref: f.Ref, Event: p})
	case core.FrameTypeReply:
		r, err := core.ParseReply(&f)
		if err != nil {
			c.runtimeError("", core.CodeInvalidFrame, err.Error())
			return
		}
		ctx.Send(c.conversation, &runtimeReplied{Conn: ctx.Self(), ID: f.ID, Reply: r})
	default:
		c.runtimeError(f.Ref, core.CodeInvalidFrame, `"type" must be publish or reply`)
	}
}

// runtimeAnswer turns the conversation's answer to a publish into a
// published or error frame; it reports whether the message was one.
func (c *connection) runtimeAnswer(ctx actor.Context) bool {
	switch m := ctx.Message().(type) {
	case *eventPublished:
		f := core.PublishedFrame{Type: core.FrameTypePublished, Ref: m.Ref}
		if m.Event != nil {
			f.ID, f.Seq, f.Timestamp = m.Event.ID, m.Event.Seq, m.Event.Timestamp.UTC().Format(core.TimestampLayout)
		}
		if b, err := core.EncodeJSON(f); err == nil {
			c.transport.Send(b)
		}
	case *publishFailed:
		var tooLarge *core.EventTooLargeError
		var invalid *core.ValidationError
		switch {
		case errors.As(m.Err, &tooLarge):
			c.runtimeError(m.Ref, core.CodeEventTooLarge, tooLarge.Error())
		case errors.As(m.Err, &invalid):
			c.runtimeError(m.Ref, core.CodeInvalidEvent, invalid.Error())
		default:
			c.runtimeError(m.Ref, core.CodeInternal, "the event could not be stored")
			c.sys.log.Error("publish runtime event", "conversation", c.convID, "err", m.Err)
		}
	default:
		return false
	}
	return true
}

// runtimeError sends the runtime an error frame.
func (c *connection) runtimeError(ref, code, detail string) {
	if b, err := core.EncodeJSON(core.ErrorFrame{Type: core.FrameTypeError, Ref: ref, Code: code, Detail: detail}); err == nil {
		c.transport.Send(b)
	}
}
