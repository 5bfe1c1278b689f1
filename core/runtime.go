package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// This file is the wire contract of /sockets/runtime/{conversation_id},
// the socket agent runtimes attach to (docs/runtime.md). Frames are JSON
// text. Conversation events travel exactly as clients receive them (an
// object with "kind"); the runtime protocol's own frames carry "type".
//
// Server to runtime:
//   - {"type":"state", ...}: the conversation's state with its secrets, first
//     on every attach and again after each settings change;
//   - event frames: the replay asked for, then every event as it is stored;
//   - {"type":"command", ...}: run, pause, interrupt, ... (never replayed);
//   - {"type":"published", ...} or {"type":"error", ...}: the outcome of each
//     publish, and "error" for a frame the server could not read.
//
// Runtime to server:
//   - {"type":"publish","ref":"...","event":{...}}: an event to store and
//     fan out (id and timestamp are assigned; "ref" comes back in the answer);
//   - {"type":"reply","id":"...","status":200,"body":{...}}: the answer to a
//     command that has an "id".

// Runtime frame types.
const (
	FrameTypeState     = "state"
	FrameTypeCommand   = "command"
	FrameTypePublished = "published"
	FrameTypeError     = "error"
	FrameTypePublish   = "publish"
	FrameTypeReply     = "reply"
	FrameTypeAuth      = "auth"
)

// The commands a runtime receives. run, pause and interrupt carry no
// params and want no reply; respond_to_confirmation carries {"accept",
// "reason"} and wants none; the rest carry the REST request's body as
// params and an id, and the runtime's reply becomes the REST answer.
const (
	CommandRun                   = "run"
	CommandPause                 = "pause"
	CommandInterrupt             = "interrupt"
	CommandRespondToConfirmation = "respond_to_confirmation"
	CommandAskAgent              = "ask_agent"
	CommandCondense              = "condense"
	CommandLoadPlugin            = "load_plugin"
	CommandSwitchProfile         = "switch_profile"
	CommandSwitchACPModel        = "switch_acp_model"
	CommandGoal                  = "goal"
	CommandGoalStop              = "goal_stop"
	CommandGoalResume            = "goal_resume"
)

// Error codes of runtime error frames, besides CodeUnknownKind,
// CodeInvalidEvent and CodeEventTooLarge.
const (
	CodeInvalidFrame = "invalid_frame"
	CodeUnknownReply = "unknown_reply"
)

// StateFrame is {"type":"state"}: the conversation as its runtime sees it.
type StateFrame struct {
	Type           string      `json:"type"`
	ConversationID string      `json:"conversation_id"`
	State          RuntimeInfo `json:"state"`
}

// CommandFrame is {"type":"command"}. ID is set when the command wants a
// reply.
type CommandFrame struct {
	Type    string          `json:"type"`
	Command string          `json:"command"`
	ID      string          `json:"id,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
}

// PublishedFrame is {"type":"published"}: the event was stored (or, for a
// StreamingDeltaEvent, fanned out) with this ID; Seq is its place in the
// log, 0 for a StreamingDeltaEvent.
type PublishedFrame struct {
	Type      string `json:"type"`
	Ref       string `json:"ref,omitempty"`
	ID        string `json:"id"`
	Seq       uint64 `json:"seq"`
	Timestamp string `json:"timestamp"`
}

// ErrorFrame is {"type":"error"}: a publish was refused (Ref names it) or a
// frame could not be read. Nothing was stored.
type ErrorFrame struct {
	Type   string `json:"type"`
	Ref    string `json:"ref,omitempty"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// RuntimeFrame is any frame a runtime sends.
type RuntimeFrame struct {
	Type   string          `json:"type"`
	Ref    string          `json:"ref,omitempty"`    // publish
	Event  json.RawMessage `json:"event,omitempty"`  // publish
	ID     string          `json:"id,omitempty"`     // reply
	Status int             `json:"status,omitempty"` // reply
	Body   json.RawMessage `json:"body,omitempty"`   // reply
}

// Reply is a runtime's answer to a command: an HTTP status and a JSON body.
type Reply struct {
	Status int
	Body   json.RawMessage
}

// ParseReply checks a reply frame: a status from 200 to 599 and a body
// that is a JSON object (an empty one when absent).
func ParseReply(f *RuntimeFrame) (Reply, error) {
	if f.ID == "" {
		return Reply{}, errors.New(`a reply needs the "id" of its command`)
	}
	if f.Status < 200 || f.Status > 599 {
		return Reply{}, fmt.Errorf("a reply's status must be an HTTP status from 200 to 599, not %d", f.Status)
	}
	body := f.Body
	if isNull(body) {
		body = emptyObject
	}
	if !isObject(body) || !json.Valid(body) {
		return Reply{}, errors.New(`a reply's "body" must be a JSON object`)
	}
	return Reply{Status: f.Status, Body: compact(body)}, nil
}

// NoRuntimeError refuses a command that needs an agent runtime when none
// attached to the conversation within Waited.
type NoRuntimeError struct {
	ConversationID string
	Waited         time.Duration
}

// Error says what is missing and how to fix it.
func (e *NoRuntimeError) Error() string {
	return fmt.Sprintf("no agent runtime is attached to conversation %s (waited %s); start one, e.g. agent-echo, and retry (docs/runtime.md)",
		e.ConversationID, e.Waited)
}

// RuntimeTimeoutError is a command whose runtime did not reply in time.
type RuntimeTimeoutError struct {
	Command string
	Waited  time.Duration
}

// Error names the command.
func (e *RuntimeTimeoutError) Error() string {
	return fmt.Sprintf("the agent runtime did not answer %s within %s", e.Command, e.Waited)
}

// ErrRuntimeLost is a command whose runtime detached before it replied.
var ErrRuntimeLost = errors.New("the agent runtime detached before it answered")

// Runtime-lost report: the ConversationErrorEvent a conversation records
// when its runtime detaches during a run.
const (
	CodeRuntimeDisconnected   = "RuntimeDisconnected"
	DetailRuntimeDisconnected = "The agent runtime disconnected during the run. Start a runtime and run the conversation again."
)
