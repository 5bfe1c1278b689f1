package actors

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/actors/clusterpb"
	"github.com/agent-server/agent-server/core"
)

// This file is the one place where the actors' own messages become the
// wire's (actors/clusterpb) and back, for cluster mode: the requests a node
// sends a conversation's owner, their answers, and errors, which cross as
// their class so that each node answers them as it would a local one.

// toOwner renders a conversation-addressed request for its owner. retry
// marks every attempt after the first.
func toOwner(m addressed, retry bool) (proto.Message, error) {
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	switch m := m.(type) {
	case *appendEvent:
		return &clusterpb.Append{Source: string(m.Source), Kind: m.Kind, Body: m.Body, IdempotencyKey: m.Key, Retry: retry || m.CheckKey, Run: m.Run}, nil
	case *deleteConversation:
		return &clusterpb.Delete{}, nil
	case *runConversation:
		return &clusterpb.Command{Command: &clusterpb.Command_Run{Run: &clusterpb.Run{WaitMs: ms(m.Wait), AllowRunning: m.AllowRunning}}}, nil
	case *pauseConversation:
		return &clusterpb.Command{Command: &clusterpb.Command_Pause{Pause: &clusterpb.Pause{Interrupt: m.Interrupt}}}, nil
	case *changeSettings:
		b, err := encodeSettings(m.Settings)
		if err != nil {
			return nil, err
		}
		return &clusterpb.Command{Command: &clusterpb.Command_Settings{Settings: b}}, nil
	case *rejectPending:
		return &clusterpb.Command{Command: &clusterpb.Command_Reject{Reject: &clusterpb.RejectPending{Reason: m.Reason, WaitMs: ms(m.Wait)}}}, nil
	case *askRuntime:
		return &clusterpb.Command{Command: &clusterpb.Command_Ask{Ask: &clusterpb.Ask{Command: m.Command, Params: m.Params, WaitMs: ms(m.Wait), TimeoutMs: ms(m.Timeout)}}}, nil
	case *publishEvent:
		p := m.Event
		return &clusterpb.Command{Command: &clusterpb.Command_Publish{Publish: &clusterpb.Publish{
			Ref: m.Ref, Source: string(p.Source), Kind: p.Kind, ParentId: p.ParentID, Body: p.Body, StateKey: p.StateKey, StateValue: p.StateValue,
			IdempotencyKey: m.Key, Retry: retry || m.CheckKey}}}, nil
	case *navigateConversation:
		return &clusterpb.Command{Command: &clusterpb.Command_Navigate{Navigate: &clusterpb.Navigate{EventId: m.EventID}}}, nil
	}
	return nil, fmt.Errorf("%T cannot be sent to another node", m)
}

// fromRemote turns a request that came over the wire into the actor's own
// message. It reports false for a message that is not such a request.
func fromRemote(id string, msg any) (any, bool) {
	dur := func(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
	switch m := msg.(type) {
	case *clusterpb.Append:
		return &appendEvent{ConversationID: id, Source: core.Source(m.Source), Kind: m.Kind, Body: m.Body, Run: m.Run, Key: m.IdempotencyKey, CheckKey: m.Retry}, true
	case *clusterpb.Delete:
		return &deleteConversation{ConversationID: id}, true
	case *clusterpb.Command:
		switch c := m.Command.(type) {
		case *clusterpb.Command_Run:
			return &runConversation{ConversationID: id, Wait: dur(c.Run.WaitMs), AllowRunning: c.Run.AllowRunning}, true
		case *clusterpb.Command_Pause:
			return &pauseConversation{ConversationID: id, Interrupt: c.Pause.Interrupt}, true
		case *clusterpb.Command_Settings:
			st, err := decodeSettings(c.Settings)
			if err != nil {
				return nil, false
			}
			return &changeSettings{ConversationID: id, Settings: st}, true
		case *clusterpb.Command_Reject:
			return &rejectPending{ConversationID: id, Reason: c.Reject.Reason, Wait: dur(c.Reject.WaitMs)}, true
		case *clusterpb.Command_Ask:
			return &askRuntime{ConversationID: id, Command: c.Ask.Command, Params: c.Ask.Params, Wait: dur(c.Ask.WaitMs), Timeout: dur(c.Ask.TimeoutMs)}, true
		case *clusterpb.Command_Publish:
			p := c.Publish
			return &publishEvent{ConversationID: id, Ref: p.Ref, Key: p.IdempotencyKey, CheckKey: p.Retry, Event: &core.Published{
				Source: core.Source(p.Source), Kind: p.Kind, ParentID: p.ParentId, Body: p.Body, StateKey: p.StateKey, StateValue: p.StateValue}}, true
		case *clusterpb.Command_Navigate:
			return &navigateConversation{ConversationID: id, EventID: c.Navigate.EventId}, true
		case *clusterpb.Command_Reply:
			r := c.Reply
			return &runtimeReplied{Conn: pidOf(r.Conn), ID: r.Id, Reply: core.Reply{Status: int(r.Status), Body: r.Body}}, true
		}
	}
	return nil, false
}

// resultOf renders an answer for a request that came over the wire.
func resultOf(msg any) *clusterpb.Result {
	switch m := msg.(type) {
	case *eventAppended:
		return &clusterpb.Result{Event: storedEvent(m.Event)}
	case *eventPublished:
		return &clusterpb.Result{Event: storedEvent(m.Event), Ref: m.Ref}
	case *publishFailed:
		return &clusterpb.Result{Error: encodeError(m.Err), Ref: m.Ref}
	case *runtimeAnswered:
		return &clusterpb.Result{HasReply: true, ReplyStatus: int32(m.Reply.Status), ReplyBody: m.Reply.Body}
	case *commandFailed:
		return &clusterpb.Result{Error: encodeError(m.Err)}
	case *commandDone, *conversationDeleted:
		return &clusterpb.Result{}
	}
	return &clusterpb.Result{Error: &clusterpb.Error{Code: "internal", Message: fmt.Sprintf("unexpected answer %T", msg)}}
}

// answerOf turns an owner's Result into the answer the request's local
// sender expects.
func answerOf(req addressed, r *clusterpb.Result) any {
	switch req.(type) {
	case *publishEvent:
		if r.Error != nil {
			return &publishFailed{Ref: r.Ref, Err: decodeError(r.Error)}
		}
		return &eventPublished{Ref: r.Ref, Event: eventOf(r.Event)}
	}
	switch {
	case r.Error != nil:
		return &commandFailed{Err: decodeError(r.Error)}
	case r.HasReply:
		return &runtimeAnswered{Reply: core.Reply{Status: int(r.ReplyStatus), Body: r.ReplyBody}}
	}
	switch req.(type) {
	case *appendEvent:
		return &eventAppended{Event: eventOf(r.Event)}
	case *deleteConversation:
		return &conversationDeleted{}
	}
	return &commandDone{}
}

func storedEvent(ev *core.Event) *clusterpb.StoredEvent {
	if ev == nil {
		return nil
	}
	return &clusterpb.StoredEvent{Id: ev.ID, Seq: ev.Seq, TimestampUnixMicro: ev.Timestamp.UnixMicro(), Source: string(ev.Source), Kind: ev.Kind, Raw: ev.Raw}
}

func eventOf(e *clusterpb.StoredEvent) *core.Event {
	if e == nil {
		return nil
	}
	return &core.Event{ID: e.Id, Seq: e.Seq, Timestamp: time.UnixMicro(e.TimestampUnixMicro).UTC(), Source: core.Source(e.Source), Kind: e.Kind, Raw: e.Raw}
}

// The error classes that cross the wire.
const (
	errNotFound       = "not_found"
	errUnavailable    = "unavailable"
	errTooLarge       = "too_large"
	errFenced         = "fenced"
	errAlreadyRunning = "already_running"
	errNoRuntime      = "no_runtime"
	errRuntimeLost    = "runtime_lost"
	errRuntimeTimeout = "runtime_timeout"
	errValidation     = "validation"
	errKeyReused      = "key_reused"
	errShutdown       = "shutdown"
	errInternal       = "internal"
)

// sentinels are the sentinel errors that cross the wire, each by its
// code, both ways. A wrapped one keeps its message (what it was about)
// across; the others are the sentinel alone.
var sentinels = []struct {
	code    string
	err     error
	wrapped bool
}{
	{errFenced, core.ErrFenced, true},
	{errNotFound, core.ErrNotFound, true},
	{errUnavailable, core.ErrUnavailable, true},
	{errAlreadyRunning, core.ErrAlreadyRunning, false},
	{errRuntimeLost, core.ErrRuntimeLost, false},
	{errKeyReused, core.ErrKeyReused, false},
	{errShutdown, ErrShutdown, false},
}

// encodeError classifies err for the wire.
func encodeError(err error) *clusterpb.Error {
	e := &clusterpb.Error{Code: errInternal, Message: err.Error()}
	var tooLarge *core.EventTooLargeError
	var noRuntime *core.NoRuntimeError
	var timeout *core.RuntimeTimeoutError
	var invalid *core.ValidationError
	switch {
	case errors.As(err, &tooLarge):
		e.Code, e.Message, e.Size, e.Max = errTooLarge, tooLarge.Kind, int64(tooLarge.Size), int64(tooLarge.Max)
	case errors.As(err, &noRuntime):
		e.Code, e.WaitedMs = errNoRuntime, noRuntime.Waited.Milliseconds()
	case errors.As(err, &timeout):
		e.Code, e.Message, e.WaitedMs = errRuntimeTimeout, timeout.Command, timeout.Waited.Milliseconds()
	case errors.As(err, &invalid):
		e.Code, e.Message, e.Field = errValidation, invalid.Detail, invalid.Field
	default:
		for _, s := range sentinels {
			if errors.Is(err, s.err) {
				e.Code = s.code
				break
			}
		}
	}
	return e
}

// decodeError rebuilds an error of the class e carries.
func decodeError(e *clusterpb.Error) error {
	switch e.Code {
	case errTooLarge:
		return &core.EventTooLargeError{Kind: e.Message, Size: int(e.Size), Max: int(e.Max)}
	case errNoRuntime:
		return &core.NoRuntimeError{Waited: time.Duration(e.WaitedMs) * time.Millisecond}
	case errRuntimeTimeout:
		return &core.RuntimeTimeoutError{Command: e.Message, Waited: time.Duration(e.WaitedMs) * time.Millisecond}
	case errValidation:
		return &core.ValidationError{Field: e.Field, Detail: e.Message}
	}
	for _, s := range sentinels {
		switch {
		case s.code != e.Code:
		case s.wrapped:
			return fmt.Errorf("%s: %w", e.Message, s.err)
		default:
			return s.err
		}
	}
	return errors.New(e.Message)
}

// settingsWire is core.Settings on the wire. SecurityAnalyzer needs its
// own flag: a nil pointer (leave it) and a pointer to null (clear it) are
// the same JSON.
type settingsWire struct {
	ConfirmationPolicy json.RawMessage              `json:"confirmation_policy,omitempty"`
	SetAnalyzer        bool                         `json:"set_analyzer,omitempty"`
	SecurityAnalyzer   json.RawMessage              `json:"security_analyzer,omitempty"`
	Secrets            map[string]core.SecretSource `json:"secrets,omitempty"`
	Title              *string                      `json:"title,omitempty"`
	Tags               *map[string]string           `json:"tags,omitempty"`
	LLM                json.RawMessage              `json:"llm,omitempty"`
}

func encodeSettings(s core.Settings) ([]byte, error) {
	w := settingsWire{ConfirmationPolicy: s.ConfirmationPolicy, Secrets: s.Secrets, Title: s.Title, Tags: s.Tags, LLM: s.LLM}
	if s.SecurityAnalyzer != nil {
		w.SetAnalyzer, w.SecurityAnalyzer = true, *s.SecurityAnalyzer
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode settings: %w", err)
	}
	return b, nil
}

func decodeSettings(b []byte) (core.Settings, error) {
	var w settingsWire
	if err := json.Unmarshal(b, &w); err != nil {
		return core.Settings{}, fmt.Errorf("decode settings: %w", err)
	}
	s := core.Settings{ConfirmationPolicy: w.ConfirmationPolicy, Secrets: w.Secrets, Title: w.Title, Tags: w.Tags, LLM: w.LLM}
	if w.SetAnalyzer {
		a := w.SecurityAnalyzer
		if a == nil {
			a = json.RawMessage("null")
		}
		s.SecurityAnalyzer = &a
	}
	return s, nil
}

// refOf and pidOf convert between PIDs and the wire's Ref.
func refOf(pid *actor.PID) *clusterpb.Ref { return &clusterpb.Ref{Address: pid.Address, Id: pid.Id} }

func pidOf(r *clusterpb.Ref) *actor.PID {
	if r == nil {
		return nil
	}
	return actor.NewPID(r.Address, r.Id)
}

// wireKey names a sender across nodes: future IDs repeat from node to node.
func wireKey(pid *actor.PID) string { return pid.Address + "/" + pid.Id }

// toWire returns msg as the answer to to: in the wire's terms when to's
// request came over the wire (the conversation recorded it), else as is.
func (c *conversation) toWire(to *actor.PID, msg any) any {
	if to == nil || c.wire == nil {
		return msg
	}
	k := wireKey(to)
	if !c.wire[k] {
		return msg
	}
	delete(c.wire, k)
	return resultOf(msg)
}

// fromWire handles a request that came over the wire: it is turned into
// the actor's own message, and its sender recorded so that the answer goes
// back in the wire's terms. It reports false for other messages.
func (c *conversation) fromWire(ctx actor.Context, msg any, sender *actor.PID) bool {
	m, ok := fromRemote(c.id, msg)
	if !ok {
		return false
	}
	if sender != nil {
		if c.wire == nil {
			c.wire = make(map[string]bool)
		}
		c.wire[wireKey(sender)] = true
	}
	c.handle(ctx, m, sender)
	return true
}
