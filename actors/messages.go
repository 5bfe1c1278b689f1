package actors

import (
	"encoding/json"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/agent-server/agent-server/core"
)

// Every message is a pointer to a small struct that is never modified after
// it is sent. Commands are imperatives, events are in the past tense. The
// package doc says which actor receives each one and from whom.

// Authenticate asks the connection supervisor to run Request.Route's chain.
// The answer goes to Reply, a channel with room for one result.
type Authenticate struct {
	Request  *core.Request
	Deadline time.Time
	Reply    chan<- core.Result
}

// Authenticated reports a finished chain run to the supervisor, from the
// goroutine that ran it.
type Authenticated struct {
	Result core.Result
	Route  core.Route
	Reply  chan<- core.Result
}

// SpawnConnection asks the supervisor for a connection actor. The answer is
// ConnectionSpawned or ConnectionRefused.
type SpawnConnection struct {
	Transport      Transport
	Principal      *core.Principal
	ConversationID string
	Replay         Replay
}

// ConnectionSpawned answers SpawnConnection with the new actor's PID.
type ConnectionSpawned struct {
	PID *actor.PID
}

// ConnectionRefused answers SpawnConnection while the system shuts down.
type ConnectionRefused struct {
	Reason core.Disconnect
}

// CloseConnections tells the supervisor to close every connection with
// Reason and refuse new ones. It answers ConnectionsClosed once every
// connection actor has stopped.
type CloseConnections struct {
	Reason core.Disconnect
}

// ConnectionsClosed answers CloseConnections.
type ConnectionsClosed struct{}

// DeliverFrame hands a connection actor one inbound text frame. Data is the
// actor's own copy.
type DeliverFrame struct {
	Data []byte
}

// PeerClosed tells a connection actor that its socket is gone.
type PeerClosed struct{}

// CredentialExpired tells a connection actor that its principal's expiry
// has passed.
type CredentialExpired struct{}

// CloseConnection tells a connection actor to close its socket with Reason
// and stop.
type CloseConnection struct {
	Reason core.Disconnect
}

// AttachConnection asks a conversation actor, through the registry, to add
// Conn as a subscriber: it sends the full_state frame and the replay to
// Transport and answers ConnectionAttached, or closes Transport and answers
// CloseConnection.
type AttachConnection struct {
	ConversationID string
	Conn           *actor.PID
	Transport      Transport
	Replay         Replay
}

// ConnectionAttached answers AttachConnection with the conversation actor's
// PID, which the connection then talks to directly.
type ConnectionAttached struct {
	Conversation *actor.PID
}

// DetachConnection removes Conn from a conversation's subscribers.
type DetachConnection struct {
	Conn *actor.PID
}

// AppendEvent asks a conversation actor to append an event and broadcast it.
// The answer is EventAppended or CommandFailed.
type AppendEvent struct {
	ConversationID string
	Source         core.Source
	Kind           string
	Body           json.RawMessage
}

// EventAppended answers AppendEvent with the sealed event.
type EventAppended struct {
	Event *core.Event
}

// DeleteConversation asks the registry to delete a conversation and close its
// sockets with 4004. The answer is ConversationDeleted or CommandFailed.
type DeleteConversation struct {
	ConversationID string
}

// ConversationDeleted answers DeleteConversation.
type ConversationDeleted struct{}

// ConversationEnded tells the registry that a conversation actor found its
// conversation gone from the store and wants to be stopped.
type ConversationEnded struct {
	ConversationID string
	PID            *actor.PID
}

// CommandFailed answers a command that could not be carried out.
type CommandFailed struct {
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
func (m *Authenticate) LogValue() slog.Value {
	return slog.GroupValue(slog.String("route", string(m.Request.Route)))
}

// LogValue summarizes the result without its principal.
func (m *Authenticated) LogValue() slog.Value {
	return slog.GroupValue(slog.String("route", string(m.Route)), slog.String("decision", m.Result.Decision.String()))
}

// LogValue names the conversation only.
func (m *SpawnConnection) LogValue() slog.Value {
	return slog.GroupValue(slog.String("conversation", m.ConversationID))
}

// LogValue gives the frame's size, never its bytes.
func (m *DeliverFrame) LogValue() slog.Value { return slog.GroupValue(slog.Int("bytes", len(m.Data))) }

// LogValue names the conversation only.
func (m *AttachConnection) LogValue() slog.Value {
	return slog.GroupValue(slog.String("conversation", m.ConversationID))
}

// LogValue gives the event's kind and size, never its body.
func (m *AppendEvent) LogValue() slog.Value {
	return slog.GroupValue(slog.String("conversation", m.ConversationID), slog.String("kind", m.Kind), slog.Int("bytes", len(m.Body)))
}

// LogValue names the event only.
func (m *EventAppended) LogValue() slog.Value {
	return slog.GroupValue(slog.String("event", m.Event.ID))
}

// IgnoreDeadLetterLogging: a request racing a shutdown is expected.
func (*Authenticate) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: frames still arrive while a connection stops.
func (*DeliverFrame) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the peer may close after the actor stopped.
func (*PeerClosed) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the conversation may have stopped first.
func (*DetachConnection) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the connection may have stopped first.
func (*CloseConnection) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging: the timer may fire after the actor stopped.
func (*resumeReplay) IgnoreDeadLetterLogging() {}

// resumeReplay tells a conversation actor, from its own timer, to carry on
// with replays that waited for a socket to drain.
type resumeReplay struct{}

// addressed is a message the registry routes to the actor of ConversationID.
type addressed interface {
	conversationID() string
}

func (m *AttachConnection) conversationID() string  { return m.ConversationID }
func (m *AppendEvent) conversationID() string       { return m.ConversationID }
func (m *crashConversation) conversationID() string { return m.ConversationID }

var (
	_ slog.LogValuer                = (*DeliverFrame)(nil)
	_ actor.IgnoreDeadLetterLogging = (*DeliverFrame)(nil)
)
