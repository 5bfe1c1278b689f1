package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/agent-server/agent-server/core"
)

// The System methods behind the REST control endpoints and runtime
// publishing over REST. Each sends one conversation-addressed message
// through the registry, so the conversation's actor stays the only writer
// of its state, and waits for its answer.

// Run starts the conversation's agent: execution_status becomes running
// and its runtime gets the run command. Without an attached runtime it waits
// up to conversations.runtime_wait for one, then fails with a
// *core.NoRuntimeError. A running conversation fails with
// core.ErrAlreadyRunning, unless allowRunning, when it is success.
func (s *System) Run(ctx context.Context, id string, allowRunning bool) error {
	wait := s.conversations.RuntimeWait
	return s.command(ctx, id, "run", &runConversation{ConversationID: id, Wait: wait, AllowRunning: allowRunning}, wait+requestTimeout)
}

// Pause pauses (or interrupts) the conversation's run; see pauseConversation.
func (s *System) Pause(ctx context.Context, id string, interrupt bool) error {
	return s.command(ctx, id, "pause", &pauseConversation{ConversationID: id, Interrupt: interrupt}, requestTimeout)
}

// ChangeSettings applies a client's settings and returns once they are
// durable and broadcast. A bad value is a *core.ValidationError.
func (s *System) ChangeSettings(ctx context.Context, id string, st core.Settings) error {
	return s.command(ctx, id, "change settings", &changeSettings{ConversationID: id, Settings: st}, requestTimeout)
}

// RejectPending forwards a rejection of the pending actions to the
// runtime, waiting for one as Run does.
func (s *System) RejectPending(ctx context.Context, id, reason string) error {
	wait := s.conversations.RuntimeWait
	return s.command(ctx, id, "reject pending actions", &rejectPending{ConversationID: id, Reason: reason, Wait: wait}, wait+requestTimeout)
}

// AskRuntime forwards a command that the runtime answers (ask_agent,
// condense, ...) with params, and returns its reply. It waits for a runtime
// as Run does, then up to conversations.runtime_reply_timeout for the reply
// (*core.RuntimeTimeoutError).
func (s *System) AskRuntime(ctx context.Context, id, command string, params json.RawMessage) (core.Reply, error) {
	wait, timeout := s.conversations.RuntimeWait, s.replyTimeout()
	res, err := s.requestWithin(ctx, s.registry, &askRuntime{ConversationID: id, Command: command, Params: params, Wait: wait, Timeout: timeout},
		wait+timeout+requestTimeout)
	if err != nil {
		return core.Reply{}, fmt.Errorf("%s on %s: %w", command, id, err)
	}
	switch m := res.(type) {
	case *runtimeAnswered:
		return m.Reply, nil
	case *commandFailed:
		return core.Reply{}, fmt.Errorf("%s on %s: %w", command, id, m.Err)
	}
	return core.Reply{}, fmt.Errorf("%s on %s: unexpected answer %T", command, id, res)
}

// PublishEvent stores and broadcasts an event a runtime published over
// REST, as its socket would; a state update is applied to the
// conversation. It returns the stored event (nil for a state update that
// changed nothing).
func (s *System) PublishEvent(ctx context.Context, id string, p *core.Published) (*core.Event, error) {
	res, err := s.request(ctx, s.registry, &publishEvent{ConversationID: id, Event: p})
	if err != nil {
		return nil, fmt.Errorf("publish %s to %s: %w", p.Kind, id, err)
	}
	switch m := res.(type) {
	case *eventPublished:
		return m.Event, nil
	case *publishFailed:
		return nil, fmt.Errorf("publish %s to %s: %w", p.Kind, id, m.Err)
	}
	return nil, fmt.Errorf("publish %s to %s: unexpected answer %T", p.Kind, id, res)
}

// command sends a command answered commandDone or commandFailed.
func (s *System) command(ctx context.Context, id, what string, msg addressed, timeout time.Duration) error {
	res, err := s.requestWithin(ctx, s.registry, msg, timeout)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	switch m := res.(type) {
	case *commandDone:
		return nil
	case *commandFailed:
		return fmt.Errorf("%s %s: %w", what, id, m.Err)
	}
	return fmt.Errorf("%s %s: unexpected answer %T", what, id, res)
}

// defaultReplyTimeout is conversations.runtime_reply_timeout when unset.
const defaultReplyTimeout = time.Minute

func (s *System) replyTimeout() time.Duration {
	if t := s.conversations.RuntimeReplyTimeout; t > 0 {
		return t
	}
	return defaultReplyTimeout
}
