package actors

import (
	"encoding/json"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// The messages of the conversation's control plane: the REST control
// endpoints, the agent runtime and the state's persistence. They follow
// messages.go's rules (pointers to small structs, never modified once
// sent) and are kept apart only so that the two sets can change
// independently. Every command to a conversation carries ConversationID
// and goes through the registry (addressed); the runtime's connection,
// once attached, talks to its conversation's PID directly, as a client's
// connection does.

// runConversation asks a conversation actor to run its agent: it sets
// execution_status to running and sends its runtime the run command.
// Without a runtime it waits up to Wait for one. The answer is commandDone
// or commandFailed (core.ErrAlreadyRunning, *core.NoRuntimeError).
type runConversation struct {
	ConversationID string
	Wait           time.Duration
	AllowRunning   bool // a running conversation is success, not ErrAlreadyRunning
}

// pauseConversation asks a conversation actor to pause (or interrupt) its
// run: an idle or running conversation becomes paused with a PauseEvent
// (InterruptEvent), the runtime gets the command, and every client gets a
// full_state. The answer is commandDone.
type pauseConversation struct {
	ConversationID string
	Interrupt      bool
}

// changeSettings asks a conversation actor to apply a client's settings;
// the answer, commandDone or commandFailed, comes once the new state and
// its ConversationStateUpdateEvents are durable.
type changeSettings struct {
	ConversationID string
	Settings       core.Settings
}

// rejectPending forwards respond_to_confirmation with accept false to the
// runtime, waiting up to Wait for one. The answer is commandDone or
// commandFailed.
type rejectPending struct {
	ConversationID string
	Reason         string
	Wait           time.Duration
}

// askRuntime forwards a command that the runtime answers (ask_agent,
// condense, ...), waiting up to Wait for a runtime and then up to Timeout
// for its reply. The answer is runtimeAnswered or commandFailed.
type askRuntime struct {
	ConversationID string
	Command        string
	Params         json.RawMessage
	Wait           time.Duration
	Timeout        time.Duration
}

// navigateConversation asks a conversation actor to move its event tree's
// HEAD to EventID, an event of its log ("": no HEAD, the next event starts
// a new root). The answer, commandDone or commandFailed, comes once the
// state is durable.
type navigateConversation struct {
	ConversationID string
	EventID        string
}

// runtimeAnswered answers askRuntime with the runtime's reply.
type runtimeAnswered struct {
	Reply core.Reply
}

// commandDone answers a command that was carried out.
type commandDone struct{}

// publishEvent asks a conversation actor to store and fan out an event a
// runtime published, over its socket or REST. The answer is eventPublished
// or publishFailed, both carrying Ref.
type publishEvent struct {
	ConversationID string
	Ref            string
	Event          *core.Published
	// Key is the idempotency key the forwarding node made (cluster mode),
	// "" for none; CheckKey says the publish may be a retry (idempotency.go).
	Key      string
	CheckKey bool
}

// eventPublished answers publishEvent. Event is nil for a state update
// that changed nothing (nothing was stored).
type eventPublished struct {
	Ref   string
	Event *core.Event
}

// publishFailed answers publishEvent that stored nothing.
type publishFailed struct {
	Ref string
	Err error
}

// runtimeReplied hands a conversation actor its runtime's reply to the
// command ID; the runtime's connection sends it.
type runtimeReplied struct {
	Conn  *actor.PID
	ID    string
	Reply core.Reply
}

// stateStored reports, from the goroutine that wrote it, that the state up
// to Version is durable, or that writing it failed.
type stateStored struct {
	Version uint64
	Err     error
}

// runtimeWaitOver tells a conversation actor, from a timer, that the
// command Token waited for a runtime as long as it may.
type runtimeWaitOver struct {
	Token uint64
}

// runtimeReplyOver tells a conversation actor, from a timer, that the
// command ID waited for its runtime's reply as long as it may.
type runtimeReplyOver struct {
	ID string
}

func (m *runConversation) conversationID() string   { return m.ConversationID }
func (m *pauseConversation) conversationID() string { return m.ConversationID }
func (m *changeSettings) conversationID() string    { return m.ConversationID }
func (m *rejectPending) conversationID() string     { return m.ConversationID }
func (m *askRuntime) conversationID() string        { return m.ConversationID }
func (m *publishEvent) conversationID() string      { return m.ConversationID }
func (m *navigateConversation) conversationID() string {
	return m.ConversationID
}

// LogValue names the command; settings may hold secrets.
func (m *changeSettings) LogValue() slog.Value {
	return slog.GroupValue(slog.String("conversation", m.ConversationID))
}

// LogValue names the command, never its params.
func (m *askRuntime) LogValue() slog.Value {
	return slog.GroupValue(slog.String("conversation", m.ConversationID), slog.String("command", m.Command))
}

// LogValue gives the event's kind, never its body.
func (m *publishEvent) LogValue() slog.Value {
	return slog.GroupValue(slog.String("conversation", m.ConversationID), slog.String("kind", m.Event.Kind))
}

// LogValue gives the status, never the body.
func (m *runtimeReplied) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", m.ID), slog.Int("status", m.Reply.Status))
}

// LogValue gives the status, never the body.
func (m *runtimeAnswered) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("status", m.Reply.Status))
}

// IgnoreDeadLetterLogging: a write may finish after the actor stopped.
func (*stateStored) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the timer may fire after the actor stopped.
func (*runtimeWaitOver) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the timer may fire after the actor stopped.
func (*runtimeReplyOver) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the conversation may have stopped first.
func (*runtimeReplied) IgnoreDeadLetterLogging() {}

var (
	_ addressed      = (*publishEvent)(nil)
	_ slog.LogValuer = (*changeSettings)(nil)
)
