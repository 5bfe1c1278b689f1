package actors

import (
	"encoding/json"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/trace"

	"github.com/agent-server/agent-server/core"
)

// Every message is a pointer to a small struct that is never modified after
// it is sent. Commands are imperatives, events are in the past tense. The
// package doc says which actor receives each one and from whom.

// authenticate asks the connection supervisor to run Request.Route's chain.
// The answer goes to Reply, a channel with room for one result.
type authenticate struct {
	Request  *core.Request
	Deadline time.Time
	Conn     *actor.PID // the connection authenticating by its first message
	// Trace is the caller's span, which the plugin calls' spans are
	// children of; zero when not traced.
	Trace trace.SpanContext
}

// authenticated reports a finished chain run to the supervisor, from the
// goroutine that ran it.
type authenticated struct {
	Result  core.Result
	Route   core.Route
	Conn    *actor.PID    // the asking connection, which gets this message
	Request *core.Request // what was authenticated, kept for revalidation
	Trace   trace.SpanContext
}

// spawnConnection asks the supervisor for a connection actor. The answer,
// connectionSpawned or connectionRefused, goes to Reply, which has room for
// it: a channel rather than a future, which would register a process and a
// timer for every connection.
type spawnConnection struct {
	Reply          chan<- any
	Transport      Transport
	Principal      *core.Principal
	ConversationID string
	Replay         Replay
	Request        *core.Request // the credential, re-run by Revalidate; nil skips it
	FirstMessage   bool          // authenticate by the first frame within AuthTimeout
	AuthTimeout    time.Duration
	Runtime        bool              // an agent runtime's socket (runtime.go)
	Done           func(ok bool)     // called once when a FirstMessage connection is decided
	Audit          *core.AuditRecord // who the socket is, for its later audit records
}

// connectionSpawned answers spawnConnection with the new actor's PID.
type connectionSpawned struct {
	PID *actor.PID
}

// connectionRefused answers spawnConnection while the system shuts down.
type connectionRefused struct {
	Reason core.Disconnect
}

// closeConnections tells the supervisor to close every connection with
// Reason and refuse new ones. It answers connectionsClosed once every
// connection actor has stopped.
type closeConnections struct {
	Reason core.Disconnect
}

// connectionsClosed answers closeConnections.
type connectionsClosed struct{}

// countConnections asks the supervisor how many connection actors it still
// has, by stage; it answers connectionsCounted.
type countConnections struct{}

// connectionsCounted answers countConnections.
type connectionsCounted struct {
	ByStage [connStages]int
}

// deliverFrame hands a connection actor one inbound text frame. Data is the
// actor's own copy.
type deliverFrame struct {
	Data []byte
}

// peerClosed tells a connection actor that its socket is gone.
type peerClosed struct{}

// credentialExpired tells a connection actor that its principal's expiry
// has passed.
type credentialExpired struct{}

// closeConnection tells a connection actor to close its socket with Reason
// and stop.
type closeConnection struct {
	Reason core.Disconnect
}

// attachConnection asks a conversation actor, through the registry, to add
// Conn as a subscriber: it sends the full_state frame and the replay to
// Transport and answers connectionAttached, or closes Transport and answers
// closeConnection.
type attachConnection struct {
	ConversationID string
	Conn           *actor.PID
	Transport      Transport
	Replay         Replay
	Runtime        bool // the connection is an agent runtime's (runtime.go)
}

// connectionAttached answers attachConnection with the conversation actor's
// PID, which the connection then talks to directly.
type connectionAttached struct {
	Conversation *actor.PID
}

// detachConnection removes Conn from a conversation's subscribers. A
// connection sends it as it stops: straight to its conversation once
// attached, or through the registry (with ConversationID) while its attach
// may still be on the way. Conversations do not watch their connections;
// this message is how they learn one left.
type detachConnection struct {
	ConversationID string
	Conn           *actor.PID
}

// appendEvent asks a conversation actor to append an event and broadcast it.
// The answer is eventAppended or commandFailed.
type appendEvent struct {
	ConversationID string
	Source         core.Source
	Kind           string
	Body           json.RawMessage
	Run            bool // a client's socket message: run the agent after it (runtime.go)
	// Key is the post's idempotency key, "" for none (idempotency.go);
	// CheckKey says the post may be a retry, so the key may be stored.
	Key      string
	CheckKey bool
}

// eventAppended answers appendEvent with the sealed event. Duplicate says
// the post's idempotency key found an earlier post's event: nothing was
// appended.
type eventAppended struct {
	Event     *core.Event
	Duplicate bool
}

// deleteConversation asks the registry to delete a conversation and close its
// sockets with 4004. The answer is conversationDeleted or commandFailed.
type deleteConversation struct {
	ConversationID string
}

// conversationDeleted answers deleteConversation.
type conversationDeleted struct{}

// conversationEnded tells the registry that a conversation actor found its
// conversation gone from the store and wants to be stopped.
type conversationEnded struct {
	ConversationID string
	PID            *actor.PID
}

// commandFailed answers a command that could not be carried out.
type commandFailed struct {
	Err error
}

// crashConnection makes a connection actor panic, and crashConversation the
// actor of ConversationID (routed by the registry). They are unexported so
// only this package's tests can send them; they exercise the deciders.
type (
	crashConnection   struct{}
	crashConversation struct{ ConversationID string }
)

// Logging. protoactor prints undeliverable messages (dead letters) and some
// failures with slog. Messages that carry a client's frame or request, which
// may hold a credential, render as a summary instead (slog.LogValuer), and
// the ones that routinely arrive after their actor stopped skip dead-letter
// logging altogether.

// LogValue summarizes the request without its headers or query.
func (m *authenticate) LogValue() slog.Value {
	return slog.GroupValue(slog.String("route", string(m.Request.Route)))
}

// LogValue summarizes the result without its principal.
func (m *authenticated) LogValue() slog.Value {
	return slog.GroupValue(slog.String("route", string(m.Route)), slog.String("decision", m.Result.Decision.String()))
}

// LogValue names the conversation only.
func (m *spawnConnection) LogValue() slog.Value {
	return slog.GroupValue(slog.String("conversation", m.ConversationID))
}

// LogValue gives the frame's size, never its bytes.
func (m *deliverFrame) LogValue() slog.Value { return slog.GroupValue(slog.Int("bytes", len(m.Data))) }

// LogValue names the conversation only.
func (m *attachConnection) LogValue() slog.Value {
	return slog.GroupValue(slog.String("conversation", m.ConversationID))
}

// LogValue gives the event's kind and size, never its body.
func (m *appendEvent) LogValue() slog.Value {
	return slog.GroupValue(slog.String("conversation", m.ConversationID), slog.String("kind", m.Kind), slog.Int("bytes", len(m.Body)))
}

// LogValue names the event only.
func (m *eventAppended) LogValue() slog.Value {
	return slog.GroupValue(slog.String("event", m.Event.ID))
}

// IgnoreDeadLetterLogging: a request racing a shutdown is expected.
func (*authenticate) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: a first-message connection may stop (its
// timeout) before its chain answers; the answer holds the credential.
func (*authenticated) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: frames still arrive while a connection stops.
func (*deliverFrame) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the peer may close after the actor stopped.
func (*peerClosed) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the conversation may have stopped first.
func (*detachConnection) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the connection may have stopped first.
func (*closeConnection) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the timer may fire after the actor stopped.
func (*resumeReplay) IgnoreDeadLetterLogging() {}

// resumeReplay tells a conversation actor, from its own timer, to carry on
// with replays that waited for a socket to drain.
type resumeReplay struct{}

// routed is a conversation-addressed message as the registry hands it to
// the conversation actor, with the original sender to answer.
type routed struct {
	Msg    addressed
	Sender *actor.PID
}

// conversationLoaded reports a conversation actor's load, from the
// goroutine that read the store: the metadata and where the log ends, or
// Err (wrapping core.ErrNotFound for an unknown conversation).
type conversationLoaded struct {
	Conv    *core.Conversation
	LastSeq uint64
	LastTS  time.Time
	Epoch   uint64 // the ownership epoch taken (cluster mode), 0 on a single node
	Err     error
}

// eventsStored reports, from the writer, that a conversation's events up to
// Through are durable, or that writing them failed (Err). Gen is the
// append generation the events were handed over in.
type eventsStored struct {
	Through uint64
	Gen     uint64
	Err     error
}

// replayResolved reports the first Seq of Conn's replay (after_id, since),
// from the goroutine that looked it up.
type replayResolved struct {
	Conn  *actor.PID
	First uint64
	Err   error
}

// replayRead hands a conversation actor one page of Conn's replay, read
// from Seq Next by a goroutine.
type replayRead struct {
	Conn   *actor.PID
	Next   uint64
	Events []*core.Event
	Err    error
}

// conversationIdle offers the registry to passivate an idle conversation
// actor; Received is how many routed messages it has handled.
type conversationIdle struct {
	ConversationID string
	PID            *actor.PID
	Received       uint64
}

// conversationRemoved reports a store delete to the registry, from the
// goroutine that ran it; Reply is the deleteConversation's sender.
type conversationRemoved struct {
	Request *deleteConversation
	Reply   *actor.PID
	Err     error
}

// countConversations asks the registry how many conversations it knows and
// how many actors run; tests and benchmarks use it. The answer is
// conversationsCounted.
type countConversations struct{}

// conversationsCounted answers countConversations.
type conversationsCounted struct {
	Known, Active int
}

// IgnoreDeadLetterLogging: the writer may answer after the actor stopped.
func (*eventsStored) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: a replay page may arrive after the actor stopped.
func (*replayRead) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: a lookup may finish after the actor stopped.
func (*replayResolved) IgnoreDeadLetterLogging() {}

// checkIdle tells a conversation actor, from its own timer, to check
// whether it has been idle for conversations.idle_timeout.
type checkIdle struct{}

// IgnoreDeadLetterLogging: the timer may fire after the actor stopped.
func (*checkIdle) IgnoreDeadLetterLogging() {}

// attachTimedOut tells a connection actor, from its own timer, that its
// conversation has not answered its attach in time.
type attachTimedOut struct{}

// firstMessageTimedOut tells a connection in the authenticating state, from
// its own timer, that auth.first_message_timeout has passed.
type firstMessageTimedOut struct{}

// revalidateConnections asks the supervisor to re-run every open socket's
// credential through the current chain and close those no longer allowed
// with 4001 "Credential revoked". Reply receives how many it closed.
type revalidateConnections struct {
	Reply chan<- int
}

// IgnoreDeadLetterLogging: the timer may fire after the actor stopped.
func (*firstMessageTimedOut) IgnoreDeadLetterLogging() {}

// addressed is a message the registry routes to the actor of ConversationID.
type addressed interface {
	conversationID() string
}

func (m *attachConnection) conversationID() string   { return m.ConversationID }
func (m *detachConnection) conversationID() string   { return m.ConversationID }
func (m *appendEvent) conversationID() string        { return m.ConversationID }
func (m *crashConversation) conversationID() string  { return m.ConversationID }
func (m *deleteConversation) conversationID() string { return m.ConversationID }

var (
	_ slog.LogValuer                = (*deliverFrame)(nil)
	_ actor.IgnoreDeadLetterLogging = (*deliverFrame)(nil)
)
