package core

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// This file knows the OpenHands event kinds (openhands-sdk 1.43.1) well
// enough to refuse an event that an OpenHands client would fail to parse:
// an unknown kind, a missing required field, a field of the wrong JSON
// type, or a field the model does not have (upstream's events forbid extra
// fields). ParsePublished applies it to what agent runtimes publish.

// More event kinds the server produces or treats specially.
const (
	KindPause          = "PauseEvent"
	KindInterrupt      = "InterruptEvent"
	KindStreamingDelta = "StreamingDeltaEvent"
	KindAction         = "ActionEvent"
)

// Codes of the errors a runtime gets for an event it may not publish.
const (
	CodeUnknownKind  = "unknown_kind"
	CodeInvalidEvent = "invalid_event"
)

// jsonType is the JSON type a field must have.
type jsonType byte

const (
	tString jsonType = 's'
	tList   jsonType = 'l'
	tObject jsonType = 'o'
	tBool   jsonType = 'b'
	tInt    jsonType = 'i'
	tAny    jsonType = 'a'
)

// kindSpec is one event model: its source's default ("" means the source is
// required), its required fields and its optional ones.
type kindSpec struct {
	source   Source
	required map[string]jsonType
	optional map[string]jsonType
}

// fields parses "name:type name:type ..." into a map.
func fields(spec string) map[string]jsonType {
	out := map[string]jsonType{}
	for _, f := range strings.Fields(spec) {
		name, t, _ := strings.Cut(f, ":")
		out[name] = jsonType(t[0])
	}
	return out
}

// kinds are the event models of openhands-sdk, by kind. ServerErrorEvent
// is the server's own and is not published.
var kinds = map[string]kindSpec{
	KindMessage: {"", fields("llm_message:o"),
		fields("llm_response_id:s activated_skills:l extended_content:l sender:s critic_result:o")},
	KindAction: {SourceAgent, fields("thought:l tool_name:s tool_call_id:s tool_call:o llm_response_id:s"),
		fields("reasoning_content:s thinking_blocks:l responses_reasoning_item:o action:o security_risk:s critic_result:o summary:s")},
	"ObservationEvent": {SourceEnvironment, fields("tool_name:s tool_call_id:s observation:o action_id:s"),
		fields("extended_content:l")},
	"UserRejectObservation": {SourceEnvironment, fields("tool_name:s tool_call_id:s action_id:s"),
		fields("rejection_reason:s rejection_source:s")},
	"AgentErrorEvent": {SourceAgent, fields("tool_name:s tool_call_id:s error:s"),
		fields("classification:o")},
	"SystemPromptEvent": {SourceAgent, fields("system_prompt:o tools:l"),
		fields("dynamic_context:o")},
	"Condensation": {SourceEnvironment, fields("llm_response_id:s"),
		fields("forgotten_event_ids:l summary:s summary_offset:i")},
	"CondensationRequest":      {SourceEnvironment, nil, nil},
	"CondensationSummaryEvent": {SourceEnvironment, fields("summary:s"), nil},
	KindStateUpdate:            {SourceEnvironment, nil, fields("key:s value:a")},
	KindConversationError:      {"", fields("code:s detail:s"), fields("classification:o")},
	KindPause:                  {SourceUser, nil, nil},
	KindInterrupt:              {SourceUser, nil, nil},
	"TokenEvent":               {"", fields("prompt_token_ids:l response_token_ids:l"), nil},
	KindStreamingDelta:         {SourceAgent, nil, fields("content:s reasoning_content:s")},
	"LLMCompletionLogEvent": {SourceEnvironment, fields("filename:s log_data:s"),
		fields("model_name:s usage_id:s")},
	"HookExecutionEvent": {SourceHook, fields("hook_event_type:s hook_command:s success:b exit_code:i"),
		fields("tool_name:s blocked:b stdout:s stderr:s reason:s additional_context:s error:s action_id:s message_id:s hook_input:o")},
	"ACPToolCallEvent": {SourceAgent, fields("tool_call_id:s title:s"),
		fields("status:s tool_kind:s raw_input:a raw_output:a content:l is_error:b")},
}

// KnownKinds lists the event kinds a runtime may publish, sorted.
func KnownKinds() []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// RuntimeStateKeys are the ConversationStateUpdateEvent keys a runtime may
// publish: the state its agent owns. The server applies each to the
// conversation's state before it stores the event; "goal" is only logged.
// The rest of the state (the policy, the analyzer, secrets, the agent,
// tags) changes through the REST endpoints, and full_state is the
// server's alone.
var RuntimeStateKeys = []string{StateKeyExecutionState, StateKeyStats, StateKeyAgentState, StateKeyActivatedSkills,
	StateKeyInvokedSkills, StateKeyBlockedActions, StateKeyBlockedMessages, StateKeyGoal}

// EventError is an event the server refuses; Code is CodeUnknownKind,
// CodeInvalidEvent or CodeEventTooLarge.
type EventError struct {
	Code   string
	Detail string
}

// Error returns the detail.
func (e *EventError) Error() string { return e.Detail }

func eventErr(code, format string, args ...any) *EventError {
	return &EventError{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Published is an event a runtime publishes, checked against its model.
type Published struct {
	Source Source
	Kind   string
	// ParentID is the parent_id the runtime gave the event, "" for none:
	// the conversation then stamps its HEAD (tree.go). Only tree nodes
	// keep it; any other kind always takes the HEAD as its parent.
	ParentID string
	Body     json.RawMessage // the fields other than id, timestamp, source, kind and parent_id
	// StateKey and StateValue are set for a ConversationStateUpdateEvent.
	StateKey   string
	StateValue json.RawMessage
}

// Ephemeral reports whether the event is fanned out without being stored:
// upstream never persists a StreamingDeltaEvent.
func (p *Published) Ephemeral() bool { return p.Kind == KindStreamingDelta }

// ParsePublished checks an event object as a runtime publishes it: a known
// kind, a valid source (the kind's default when absent), every required
// field present and not null, every field of the right JSON type and known
// to the model. id and timestamp are the server's to assign and refused.
// The error is an *EventError.
func ParsePublished(raw []byte) (*Published, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || !isObject(raw) {
		return nil, eventErr(CodeInvalidEvent, "an event must be a JSON object")
	}
	var kind string
	if err := json.Unmarshal(obj["kind"], &kind); err != nil || kind == "" {
		return nil, eventErr(CodeUnknownKind, `the event needs "kind", one of %s`, strings.Join(KnownKinds(), ", "))
	}
	spec, ok := kinds[kind]
	if !ok {
		return nil, eventErr(CodeUnknownKind, "kind %q is not an OpenHands event kind; known kinds: %s", truncate(kind, 64), strings.Join(KnownKinds(), ", "))
	}
	for _, k := range []string{"id", "timestamp"} {
		if _, ok := obj[k]; ok {
			return nil, eventErr(CodeInvalidEvent, "field %q is assigned by the server; leave it out", k)
		}
	}
	p := &Published{Kind: kind, Source: spec.source}
	if v, ok := obj["source"]; ok {
		if err := json.Unmarshal(v, &p.Source); err != nil || !p.Source.Valid() {
			return nil, eventErr(CodeInvalidEvent, `%s: "source" must be one of agent, user, environment, hook`, kind)
		}
	}
	if p.Source == "" {
		return nil, eventErr(CodeInvalidEvent, `%s: "source" is required`, kind)
	}
	body := make(map[string]json.RawMessage, len(obj))
	for name, v := range obj {
		if isEnvelopeKey(name) {
			continue
		}
		t, req := spec.required[name]
		if !req {
			var opt bool
			if t, opt = spec.optional[name]; !opt && name != "parent_id" {
				return nil, eventErr(CodeInvalidEvent, "%s has no field %q; OpenHands clients refuse unknown fields", kind, truncate(name, 64))
			}
			if name == "parent_id" {
				t = tString
			}
			if isNull(v) {
				continue // null is every optional field's default
			}
		}
		if err := checkType(kind, name, t, v); err != nil {
			return nil, err
		}
		if name == "parent_id" {
			if err := json.Unmarshal(v, &p.ParentID); err != nil || p.ParentID == "" {
				return nil, eventErr(CodeInvalidEvent, "%s: parent_id must name an event", kind)
			}
			continue // the envelope's: Seal writes it
		}
		body[name] = v
	}
	for _, name := range sortedKeys(spec.required) {
		if _, ok := body[name]; !ok {
			return nil, eventErr(CodeInvalidEvent, "%s needs the field %q", kind, name)
		}
	}
	if err := checkNested(kind, body); err != nil {
		return nil, err
	}
	if kind == KindStateUpdate {
		if err := parseStateUpdate(p, body); err != nil {
			return nil, err
		}
	}
	b, err := EncodeJSON(body)
	if err != nil {
		return nil, eventErr(CodeInvalidEvent, "%s could not be encoded", kind)
	}
	p.Body = b
	return p, nil
}

// checkType checks that v has the JSON type t. A required field may not be
// null.
func checkType(kind, name string, t jsonType, v json.RawMessage) error {
	v = bytes.TrimSpace(v)
	if isNull(v) {
		return eventErr(CodeInvalidEvent, "%s: field %q may not be null", kind, name)
	}
	ok := true
	switch t {
	case tString:
		ok = v[0] == '"'
	case tList:
		ok = v[0] == '['
	case tObject:
		ok = v[0] == '{'
	case tBool:
		ok = bytes.Equal(v, []byte("true")) || bytes.Equal(v, []byte("false"))
	case tInt:
		var n json.Number
		ok = json.Unmarshal(v, &n) == nil && !strings.ContainsAny(n.String(), ".eE")
	}
	if !ok {
		return eventErr(CodeInvalidEvent, "%s: field %q must be %s", kind, name, typeName(t))
	}
	return nil
}

func typeName(t jsonType) string {
	switch t {
	case tString:
		return "a string"
	case tList:
		return "a list"
	case tObject:
		return "an object"
	case tBool:
		return "true or false"
	case tInt:
		return "an integer"
	}
	return "a value"
}

// llmRoles are the roles of an OpenHands Message.
var llmRoles = []string{"user", "system", "assistant", "tool"}

// checkNested checks the nested models clients need to parse an event: a
// MessageEvent's llm_message role, an ActionEvent's tool_call, the kind of
// an action or observation.
func checkNested(kind string, body map[string]json.RawMessage) error {
	switch kind {
	case KindMessage:
		var m struct {
			Role string `json:"role"`
		}
		if json.Unmarshal(body["llm_message"], &m) != nil || !slices.Contains(llmRoles, m.Role) {
			return eventErr(CodeInvalidEvent, `MessageEvent: llm_message needs "role": user, system, assistant or tool`)
		}
	case KindAction:
		var call map[string]json.RawMessage
		_ = json.Unmarshal(body["tool_call"], &call)
		for _, f := range []string{"id", "name", "arguments", "origin"} {
			if isNull(call[f]) {
				return eventErr(CodeInvalidEvent, "ActionEvent: tool_call needs %q", f)
			}
		}
		if a, ok := body["action"]; ok {
			if err := needKind(kind, "action", a); err != nil {
				return err
			}
		}
	case "ObservationEvent":
		return needKind(kind, "observation", body["observation"])
	}
	return nil
}

func needKind(kind, field string, raw json.RawMessage) error {
	var v struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(raw, &v) != nil || v.Kind == "" {
		return eventErr(CodeInvalidEvent, `%s: %s needs its "kind"`, kind, field)
	}
	return nil
}

// parseStateUpdate checks a runtime's ConversationStateUpdateEvent: a key
// it may set, and for execution_status a known status.
func parseStateUpdate(p *Published, body map[string]json.RawMessage) error {
	if err := json.Unmarshal(body["key"], &p.StateKey); err != nil || p.StateKey == "" {
		return eventErr(CodeInvalidEvent, `ConversationStateUpdateEvent from a runtime needs "key", one of %s`, strings.Join(RuntimeStateKeys, ", "))
	}
	if !slices.Contains(RuntimeStateKeys, p.StateKey) {
		return eventErr(CodeInvalidEvent, "state key %q is not the runtime's to set; it may set %s", truncate(p.StateKey, 64), strings.Join(RuntimeStateKeys, ", "))
	}
	p.StateValue = body["value"]
	want := map[string]jsonType{StateKeyStats: tObject, StateKeyAgentState: tObject, StateKeyActivatedSkills: tList,
		StateKeyInvokedSkills: tList, StateKeyBlockedActions: tObject, StateKeyBlockedMessages: tObject, StateKeyGoal: tAny}
	if p.StateKey == StateKeyExecutionState {
		var s ExecutionStatus
		if err := json.Unmarshal(p.StateValue, &s); err != nil {
			return eventErr(CodeInvalidEvent, "execution_status must be a string")
		}
		if _, err := ParseStatus(string(s)); err != nil || s == StatusDeleting || strings.ToLower(string(s)) != string(s) {
			return eventErr(CodeInvalidEvent, "execution_status %q is not one of idle, running, paused, waiting_for_confirmation, finished, error, stuck", truncate(string(s), 32))
		}
		return nil
	}
	return checkType(KindStateUpdate, "value", want[p.StateKey], p.StateValue)
}

func sortedKeys(m map[string]jsonType) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
