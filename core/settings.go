package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// This file holds the conversation state's transitions, pure functions of
// a Conversation that the conversation actor applies: settings from the
// REST endpoints, state a runtime reports, and the execution status rules
// of upstream's server. Each returns a new Conversation (the old one is
// never modified) and the state keys that changed, in the order their
// ConversationStateUpdateEvents go out.

// ErrAlreadyRunning refuses a run while the conversation runs. REST answers
// it 409 with AlreadyRunningDetail.
var ErrAlreadyRunning = errors.New("conversation already running")

// AlreadyRunningDetail is upstream's 409 detail for ErrAlreadyRunning.
const AlreadyRunningDetail = "Conversation already running. Wait for completion or pause first."

// Settings is a change a client makes to a conversation through REST. Nil
// fields leave their setting unchanged.
type Settings struct {
	ConfirmationPolicy json.RawMessage         // /confirmation_policy, checked
	SecurityAnalyzer   *json.RawMessage        // /security_analyzer; a nil value clears it
	Secrets            map[string]SecretSource // /secrets: added or replaced
	Title              *string                 // PATCH
	Tags               *map[string]string      // PATCH: replaces them all
	LLM                json.RawMessage         // /switch_llm: the agent's new llm
}

// ApplySettings returns c with s applied and the state keys that changed.
// Title has no key: upstream broadcasts no event for it.
func ApplySettings(c *Conversation, s Settings) (*Conversation, []string, error) {
	next := c.Clone()
	var keys []string
	if s.ConfirmationPolicy != nil && !jsonEqual(orDefault(c.ConfirmationPolicy, policyNever), s.ConfirmationPolicy) {
		next.ConfirmationPolicy = s.ConfirmationPolicy
		keys = append(keys, StateKeyConfirmationPolicy)
	}
	if s.SecurityAnalyzer != nil && !jsonEqual(c.SecurityAnalyzer, *s.SecurityAnalyzer) {
		next.SecurityAnalyzer = *s.SecurityAnalyzer
		keys = append(keys, StateKeySecurityAnalyzer)
	}
	if s.LLM != nil {
		agent, err := withLLM(c.Agent, s.LLM)
		if err != nil {
			return nil, nil, err
		}
		if !jsonEqual(c.Agent, agent) {
			next.Agent = agent
			keys = append(keys, StateKeyAgent)
		}
	}
	if len(s.Secrets) > 0 {
		next.Secrets = MergeSecrets(c.Secrets, s.Secrets)
		keys = append(keys, StateKeySecretRegistry)
	}
	if s.Tags != nil && !mapsEqual(c.Tags, *s.Tags) {
		next.Tags = *s.Tags
		keys = append(keys, StateKeyTags)
	}
	if s.Title != nil {
		next.Title = *s.Title
	}
	return next, keys, nil
}

// withLLM returns the agent with its "llm" replaced.
func withLLM(agent, llm json.RawMessage) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(agent, &obj); err != nil || obj == nil {
		return nil, invalid("llm", "the conversation has no agent whose llm could be switched")
	}
	obj["llm"] = compact(llm)
	return EncodeJSON(obj)
}

// ApplyRuntimeState returns c with a runtime's state update applied (key
// one of RuntimeStateKeys, checked by ParsePublished) and whether the state
// changed. "goal" changes nothing: it is only logged.
func ApplyRuntimeState(c *Conversation, key string, value json.RawMessage) (*Conversation, bool, error) {
	next := c.Clone()
	var err error
	switch key {
	case StateKeyExecutionState:
		var s ExecutionStatus
		err = json.Unmarshal(value, &s)
		next.ExecutionStatus = s
	case StateKeyStats:
		next.Stats = compact(value)
	case StateKeyAgentState:
		next.AgentState = compact(value)
	case StateKeyActivatedSkills:
		err = json.Unmarshal(value, &next.ActivatedSkills)
	case StateKeyInvokedSkills:
		err = json.Unmarshal(value, &next.InvokedSkills)
	case StateKeyBlockedActions:
		err = json.Unmarshal(value, &next.BlockedActions)
	case StateKeyBlockedMessages:
		err = json.Unmarshal(value, &next.BlockedMessages)
	case StateKeyGoal:
		return c, false, nil
	default:
		return nil, false, fmt.Errorf("state key %q is not the runtime's to set", key)
	}
	if err != nil {
		return nil, false, invalid(key, "has the wrong type: %v", err)
	}
	before, _ := c.StateValue(key)
	after, _ := next.StateValue(key)
	if jsonEqual(before, after) {
		return c, false, nil
	}
	return next, true, nil
}

// WithStatus returns c with execution_status s, and whether it changed.
func WithStatus(c *Conversation, s ExecutionStatus) (*Conversation, bool) {
	if c.status() == s {
		return c, false
	}
	next := c.Clone()
	next.ExecutionStatus = s
	return next, true
}

// Status returns c's execution status (idle when unset).
func (c *Conversation) Status() ExecutionStatus { return c.status() }

// Pausable reports whether pause and interrupt move c to paused: upstream
// pauses an idle or running conversation and leaves the others as they are.
func (c *Conversation) Pausable() bool {
	s := c.status()
	return s == StatusIdle || s == StatusRunning
}

// ResetsOnMessage reports whether a user message returns c to idle, as
// upstream's send_message does after finished or stuck.
func (c *Conversation) ResetsOnMessage() bool {
	s := c.status()
	return s == StatusFinished || s == StatusStuck
}

// jsonEqual compares two JSON values semantically; empty and null are equal.
func jsonEqual(a, b json.RawMessage) bool {
	if isNull(a) || isNull(b) {
		return isNull(a) && isNull(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	ea, _ := json.Marshal(x) // maps marshal with sorted keys
	eb, _ := json.Marshal(y)
	return bytes.Equal(ea, eb)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
