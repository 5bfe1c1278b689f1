package core

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// This file renders a Conversation as OpenHands clients read it
// (openhands-agent-server 1.43.1: ConversationInfo and ConversationState)
// and checks the values clients send for it. Three renderings, one per
// channel, differ only in how secrets appear:
//
//   - Info: GET /api/conversations/{id} and the searches. Every field, nulls
//     included; secret values are null (upstream redacts, then re-reads the
//     redacted value as None).
//   - FullState: the value of the "full_state" ConversationStateUpdateEvent.
//     The ConversationState fields only, null ones left out; secret values
//     are "**********".
//   - RuntimeState: what the conversation's agent runtime receives. The Info
//     fields with the secrets in plain text, plus the create request's
//     remaining fields (Launch).

// Upstream's defaults for fields a create request leaves out.
const (
	DefaultMaxIterations = 500
	// PersistenceRoot is upstream's conversations_path; persistence_dir is
	// it plus the conversation ID without dashes. OpenHands clients require
	// the field; nothing is written there by this server.
	PersistenceRoot = "workspace/conversations"
	// RedactedSecret stands for a secret value on the WebSocket, as
	// upstream's pydantic SecretStr renders it.
	RedactedSecret = "**********"
	// MaxTitleLength bounds a title set with PATCH; AutoTitleLength one made
	// from the first user message.
	MaxTitleLength  = 200
	AutoTitleLength = 50
	maxTagValue     = 256
)

// The keys of ConversationStateUpdateEvent this server emits or accepts, as
// upstream names ConversationState's fields.
const (
	StateKeyConfirmationPolicy = "confirmation_policy"
	StateKeySecurityAnalyzer   = "security_analyzer"
	StateKeyAgent              = "agent"
	StateKeyTags               = "tags"
	StateKeySecretRegistry     = "secret_registry"
	StateKeyStats              = "stats"
	StateKeyAgentState         = "agent_state"
	StateKeyActivatedSkills    = "activated_knowledge_skills"
	StateKeyInvokedSkills      = "invoked_skills"
	StateKeyBlockedActions     = "blocked_actions"
	StateKeyBlockedMessages    = "blocked_messages"
	StateKeyGoal               = "goal"
)

var (
	policyNever  = json.RawMessage(`{"kind":"NeverConfirm"}`)
	emptyStats   = json.RawMessage(`{"usage_to_metrics":{}}`)
	emptyObject  = json.RawMessage(`{}`)
	emptyList    = json.RawMessage(`[]`)
	securityRisk = []string{"LOW", "MEDIUM", "HIGH"}
)

// Secret is a secret value. It is stored as given, and prints as
// RedactedSecret, so a log line or an error cannot carry it by accident.
type Secret string

// String returns RedactedSecret.
func (Secret) String() string { return RedactedSecret }

// GoString returns RedactedSecret quoted.
func (Secret) GoString() string { return `"` + RedactedSecret + `"` }

// LogValue returns RedactedSecret.
func (Secret) LogValue() slog.Value { return slog.StringValue(RedactedSecret) }

// SecretSource is one entry of a conversation's secret registry:
// upstream's StaticSecret (Value) or LookupSecret (URL and Headers).
type SecretSource struct {
	Kind        string            `json:"kind"`
	Description string            `json:"description,omitempty"`
	Value       Secret            `json:"value,omitempty"`
	URL         string            `json:"url,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
}

// The secret source kinds.
const (
	SecretStatic = "StaticSecret"
	SecretLookup = "LookupSecret"
)

// secretMode is how a rendering shows secret values.
type secretMode int

const (
	secretsNull  secretMode = iota // REST: null
	secretsStars                   // WebSocket: "**********"
	secretsPlain                   // the runtime: the value
)

// ConversationInfo is upstream's ConversationInfo, field for field, in its
// order; null fields are kept.
type ConversationInfo struct {
	ID                         string            `json:"id"`
	Workspace                  json.RawMessage   `json:"workspace"`
	PersistenceDir             string            `json:"persistence_dir"`
	MaxIterations              int               `json:"max_iterations"`
	StuckDetection             bool              `json:"stuck_detection"`
	ExecutionStatus            ExecutionStatus   `json:"execution_status"`
	ConfirmationPolicy         json.RawMessage   `json:"confirmation_policy"`
	SecurityAnalyzer           json.RawMessage   `json:"security_analyzer"`
	ActivatedKnowledgeSkills   []string          `json:"activated_knowledge_skills"`
	InvokedSkills              []string          `json:"invoked_skills"`
	BlockedActions             map[string]string `json:"blocked_actions"`
	BlockedMessages            map[string]string `json:"blocked_messages"`
	LastUserMessageID          *string           `json:"last_user_message_id"`
	LeafEventID                *string           `json:"leaf_event_id"`
	Stats                      json.RawMessage   `json:"stats"`
	SecretRegistry             json.RawMessage   `json:"secret_registry"`
	AgentState                 json.RawMessage   `json:"agent_state"`
	HookConfig                 json.RawMessage   `json:"hook_config"`
	Title                      *string           `json:"title"`
	Metrics                    json.RawMessage   `json:"metrics"`
	CreatedAt                  time.Time         `json:"created_at"`
	UpdatedAt                  time.Time         `json:"updated_at"`
	ForkedFromConversationID   *string           `json:"forked_from_conversation_id"`
	ForkedFromEventID          *string           `json:"forked_from_event_id"`
	ParentConversationID       *string           `json:"parent_conversation_id"`
	SubConversationIDs         []string          `json:"sub_conversation_ids"`
	Tags                       map[string]string `json:"tags"`
	CurrentModelID             json.RawMessage   `json:"current_model_id"`
	AvailableModels            json.RawMessage   `json:"available_models"`
	SupportsRuntimeModelSwitch bool              `json:"supports_runtime_model_switch"`
	LaunchedAgentProfile       json.RawMessage   `json:"launched_agent_profile"`
	Agent                      json.RawMessage   `json:"agent"`
	ClientTools                json.RawMessage   `json:"client_tools"`
}

// Info renders c for REST, secrets as null. Unless includeSkills, the
// agent's agent_context.skills are trimmed to [], as upstream does.
func (c *Conversation) Info(includeSkills bool) *ConversationInfo {
	return c.info(secretsNull, includeSkills)
}

// RuntimeInfo is what an agent runtime receives about its conversation:
// the Info fields with secrets in plain text, plus Launch and
// head_is_empty (with leaf_event_id, where the agent's context starts:
// see tree.go).
type RuntimeInfo struct {
	*ConversationInfo
	HeadIsEmpty bool            `json:"head_is_empty"`
	Launch      json.RawMessage `json:"launch"`
}

// RuntimeState renders c for its agent runtime, secrets in plain text.
// Only the runtime socket may carry it.
func (c *Conversation) RuntimeState() RuntimeInfo {
	launch := c.Launch
	if len(launch) == 0 {
		launch = emptyObject
	}
	return RuntimeInfo{ConversationInfo: c.info(secretsPlain, true), HeadIsEmpty: c.Head.Empty, Launch: launch}
}

func (c *Conversation) info(mode secretMode, includeSkills bool) *ConversationInfo {
	in := &ConversationInfo{
		ID:                       c.ID,
		Workspace:                c.Workspace,
		PersistenceDir:           c.PersistenceDir(),
		MaxIterations:            c.maxIterations(),
		StuckDetection:           c.StuckDetection == nil || *c.StuckDetection,
		ExecutionStatus:          c.status(),
		ConfirmationPolicy:       orDefault(c.ConfirmationPolicy, policyNever),
		SecurityAnalyzer:         c.SecurityAnalyzer,
		ActivatedKnowledgeSkills: orEmpty(c.ActivatedSkills),
		InvokedSkills:            orEmpty(c.InvokedSkills),
		BlockedActions:           orEmptyMap(c.BlockedActions),
		BlockedMessages:          orEmptyMap(c.BlockedMessages),
		Stats:                    orDefault(c.Stats, emptyStats),
		SecretRegistry:           c.secretRegistry(mode),
		AgentState:               orDefault(c.AgentState, emptyObject),
		HookConfig:               c.HookConfig,
		CreatedAt:                c.CreatedAt,
		UpdatedAt:                c.UpdatedAt,
		SubConversationIDs:       []string{},
		Tags:                     orEmptyMap(c.Tags),
		CurrentModelID:           c.agentStateValue("acp_current_model_id", nil),
		AvailableModels:          c.agentStateValue("acp_available_models", emptyList),
		Agent:                    c.Agent,
		ClientTools:              orDefault(c.ClientTools, emptyList),
	}
	if c.Title != "" {
		in.Title = &c.Title
	}
	if c.ParentConversationID != "" {
		in.ParentConversationID = &c.ParentConversationID
	}
	if c.ForkedFromConversationID != "" {
		in.ForkedFromConversationID = &c.ForkedFromConversationID
	}
	if c.ForkedFromEventID != "" {
		in.ForkedFromEventID = &c.ForkedFromEventID
	}
	if c.Head.LeafEventID != "" {
		in.LeafEventID = &c.Head.LeafEventID
	}
	if v := c.agentStateValue("acp_supports_runtime_model_switch", nil); string(v) == "true" {
		in.SupportsRuntimeModelSwitch = true
	}
	if mode != secretsPlain || !includeSkills {
		in.Agent = maskAgent(c.Agent, mode, includeSkills)
	}
	return in
}

// fullState is upstream's ConversationState as the full_state event
// carries it: exclude_none, so null fields are left out.
type fullState struct {
	ID                       string            `json:"id"`
	Agent                    json.RawMessage   `json:"agent,omitempty"`
	Workspace                json.RawMessage   `json:"workspace,omitempty"`
	PersistenceDir           string            `json:"persistence_dir"`
	MaxIterations            int               `json:"max_iterations"`
	StuckDetection           bool              `json:"stuck_detection"`
	ExecutionStatus          ExecutionStatus   `json:"execution_status"`
	ConfirmationPolicy       json.RawMessage   `json:"confirmation_policy"`
	SecurityAnalyzer         json.RawMessage   `json:"security_analyzer,omitempty"`
	ActivatedKnowledgeSkills []string          `json:"activated_knowledge_skills"`
	ActivatedPathRules       []string          `json:"activated_path_rules"`
	InvokedSkills            []string          `json:"invoked_skills"`
	BlockedActions           map[string]string `json:"blocked_actions"`
	BlockedMessages          map[string]string `json:"blocked_messages"`
	LeafEventID              *string           `json:"leaf_event_id,omitempty"`
	HeadIsEmpty              bool              `json:"head_is_empty"`
	Stats                    json.RawMessage   `json:"stats"`
	SecretRegistry           json.RawMessage   `json:"secret_registry"`
	Tags                     map[string]string `json:"tags"`
	AgentState               json.RawMessage   `json:"agent_state"`
	HookConfig               json.RawMessage   `json:"hook_config,omitempty"`
}

// FullState renders c as the value of the full_state event, secrets as
// "**********".
func (c *Conversation) FullState() any {
	in := c.info(secretsStars, true)
	return &fullState{
		ID: in.ID, Agent: in.Agent, Workspace: in.Workspace, PersistenceDir: in.PersistenceDir,
		MaxIterations: in.MaxIterations, StuckDetection: in.StuckDetection, ExecutionStatus: in.ExecutionStatus,
		ConfirmationPolicy: in.ConfirmationPolicy, SecurityAnalyzer: in.SecurityAnalyzer,
		ActivatedKnowledgeSkills: in.ActivatedKnowledgeSkills, ActivatedPathRules: []string{}, InvokedSkills: in.InvokedSkills,
		BlockedActions: in.BlockedActions, BlockedMessages: in.BlockedMessages, LeafEventID: in.LeafEventID,
		HeadIsEmpty: c.Head.Empty, Stats: in.Stats,
		SecretRegistry: in.SecretRegistry, Tags: in.Tags, AgentState: in.AgentState, HookConfig: in.HookConfig,
	}
}

// StateValue renders the value of a per-field ConversationStateUpdateEvent
// for key, as the WebSocket shows it (secrets as "**********"). A nil
// value means null: upstream then leaves "value" out of the event.
func (c *Conversation) StateValue(key string) (json.RawMessage, error) {
	switch key {
	case StateKeyExecutionState:
		return EncodeJSON(c.status())
	case StateKeyConfirmationPolicy:
		return orDefault(c.ConfirmationPolicy, policyNever), nil
	case StateKeySecurityAnalyzer:
		return c.SecurityAnalyzer, nil
	case StateKeyAgent:
		return maskAgent(c.Agent, secretsStars, true), nil
	case StateKeyTags:
		return EncodeJSON(orEmptyMap(c.Tags))
	case StateKeySecretRegistry:
		return c.secretRegistry(secretsStars), nil
	case StateKeyStats:
		return orDefault(c.Stats, emptyStats), nil
	case StateKeyAgentState:
		return orDefault(c.AgentState, emptyObject), nil
	case StateKeyActivatedSkills:
		return EncodeJSON(orEmpty(c.ActivatedSkills))
	case StateKeyInvokedSkills:
		return EncodeJSON(orEmpty(c.InvokedSkills))
	case StateKeyBlockedActions:
		return EncodeJSON(orEmptyMap(c.BlockedActions))
	case StateKeyBlockedMessages:
		return EncodeJSON(orEmptyMap(c.BlockedMessages))
	}
	return nil, fmt.Errorf("state key %q has no value in the conversation", key)
}

// StateUpdateBody renders a per-field ConversationStateUpdateEvent body:
// {"key":..., "value":...}, without "value" when it is null, as upstream
// writes it.
func StateUpdateBody(key string, value json.RawMessage) json.RawMessage {
	if len(value) == 0 || bytes.Equal(bytes.TrimSpace(value), []byte("null")) {
		b, _ := EncodeJSON(struct {
			Key string `json:"key"`
		}{key})
		return b
	}
	b, _ := EncodeJSON(struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}{key, value})
	return b
}

// PersistenceDir is upstream's persistence_dir for c.
func (c *Conversation) PersistenceDir() string {
	if u, err := uuid.Parse(c.ID); err == nil {
		return PersistenceRoot + "/" + strings.ReplaceAll(u.String(), "-", "")
	}
	return PersistenceRoot + "/" + c.ID
}

func (c *Conversation) maxIterations() int {
	if c.MaxIterations > 0 {
		return c.MaxIterations
	}
	return DefaultMaxIterations
}

func (c *Conversation) status() ExecutionStatus {
	if c.ExecutionStatus == "" {
		return StatusIdle
	}
	return c.ExecutionStatus
}

// agentStateValue returns agent_state[key] (the ACP agent's model fields),
// or def.
func (c *Conversation) agentStateValue(key string, def json.RawMessage) json.RawMessage {
	var st map[string]json.RawMessage
	if len(c.AgentState) == 0 || json.Unmarshal(c.AgentState, &st) != nil {
		return def
	}
	if v, ok := st[key]; ok && string(v) != "null" {
		return v
	}
	return def
}

// secretRegistry renders {"secret_sources": {...}} in mode.
func (c *Conversation) secretRegistry(mode secretMode) json.RawMessage {
	type source struct {
		Description *string           `json:"description,omitempty"`
		Value       *string           `json:"value,omitempty"`
		URL         string            `json:"url,omitempty"`
		Headers     map[string]string `json:"headers,omitempty"`
		Kind        string            `json:"kind"`
	}
	out := make(map[string]any, len(c.Secrets))
	for name, s := range c.Secrets {
		var desc *string
		if s.Description != "" {
			d := s.Description
			desc = &d
		}
		headers := s.Headers
		if s.Kind == SecretLookup {
			headers = maskHeaders(s.Headers, mode)
		}
		switch mode {
		case secretsNull:
			// Upstream's REST shape: every field present, values null.
			m := map[string]any{"description": desc, "kind": s.Kind}
			if s.Kind == SecretLookup {
				m["url"], m["headers"] = s.URL, headers
			} else {
				m["value"] = nil
			}
			out[name] = m
		case secretsStars:
			src := source{Description: desc, URL: s.URL, Headers: headers, Kind: s.Kind}
			if s.Kind != SecretLookup && s.Value != "" {
				v := RedactedSecret
				src.Value = &v
			}
			out[name] = src
		default:
			src := source{Description: desc, URL: s.URL, Headers: headers, Kind: s.Kind}
			if s.Value != "" {
				v := string(s.Value)
				src.Value = &v
			}
			out[name] = src
		}
	}
	b, _ := EncodeJSON(struct {
		SecretSources map[string]any `json:"secret_sources"`
	}{out})
	return b
}

// maskHeaders masks the values of headers whose names look secret, as
// upstream's LookupSecret does; REST drops them, as upstream's re-read does.
func maskHeaders(h map[string]string, mode secretMode) map[string]string {
	if mode == secretsPlain || h == nil {
		return h
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		switch {
		case !IsSecretKey(k):
			out[k] = v
		case mode == secretsStars:
			out[k] = RedactedSecret
		}
	}
	return out
}

// secretKeyParts are the upper-case fragments that mark a field name as a
// secret's (upstream's is_secret_key patterns).
var secretKeyParts = []string{"AUTHORIZATION", "COOKIE", "CREDENTIAL", "KEY", "PASSWORD", "SECRET", "SESSION", "TOKEN"}

// IsSecretKey reports whether a field or header name looks like it holds a
// secret: its upper case contains AUTHORIZATION, COOKIE, CREDENTIAL, KEY,
// PASSWORD, SECRET, SESSION or TOKEN, as upstream's redaction decides.
func IsSecretKey(name string) bool {
	up := strings.ToUpper(name)
	for _, p := range secretKeyParts {
		if strings.Contains(up, p) {
			return true
		}
	}
	return false
}

// redactAllKeys are the fields under which every string is a secret:
// environments, headers and secret maps.
var redactAllKeys = []string{"env", "environment", "headers", "extra_headers", "secrets"}

// maskAgent returns the agent JSON with the strings of secret-named fields
// (api_key, aws_secret_access_key, MCP env and headers, agent_context
// secrets, ...) masked for mode, and agent_context.skills trimmed to []
// unless includeSkills. An agent that is not a JSON object is returned as
// it is.
func maskAgent(agent json.RawMessage, mode secretMode, includeSkills bool) json.RawMessage {
	if len(agent) == 0 {
		return agent
	}
	dec := json.NewDecoder(bytes.NewReader(agent))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return agent
	}
	if mode != secretsPlain {
		maskValue(obj, false, mode)
	}
	if !includeSkills {
		if ctx, ok := obj["agent_context"].(map[string]any); ok {
			if _, has := ctx["skills"]; has {
				ctx["skills"] = []any{}
			}
		}
	}
	b, err := EncodeJSON(obj)
	if err != nil {
		return nil
	}
	return b
}

// maskValue masks, in place, the strings below a secret-named field (all
// of them when all is set).
func maskValue(v any, all bool, mode secretMode) any {
	switch x := v.(type) {
	case string:
		if !all {
			return x
		}
		if mode == secretsStars {
			return RedactedSecret
		}
		return nil
	case map[string]any:
		for k, child := range x {
			sub := all || IsSecretKey(k) || slices.Contains(redactAllKeys, strings.ToLower(k))
			x[k] = maskValue(child, sub, mode)
		}
	case []any:
		for i, child := range x {
			x[i] = maskValue(child, all, mode)
		}
	}
	return v
}

func orDefault(v, def json.RawMessage) json.RawMessage {
	if len(v) == 0 || string(v) == "null" {
		return def
	}
	return v
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func orEmptyMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// ValidationError is a value a client sent that does not fit its field.
type ValidationError struct {
	Field  string
	Detail string
}

// Error names the field.
func (e *ValidationError) Error() string { return e.Field + ": " + e.Detail }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Detail: fmt.Sprintf(format, args...)}
}

// ParseConfirmationPolicy checks a confirmation policy (NeverConfirm,
// AlwaysConfirm or ConfirmRisky) and returns it as upstream renders it,
// defaults filled in.
func ParseConfirmationPolicy(field string, raw json.RawMessage) (json.RawMessage, error) {
	var p struct {
		Kind           string  `json:"kind"`
		Threshold      *string `json:"threshold"`
		ConfirmUnknown *bool   `json:"confirm_unknown"`
	}
	if err := json.Unmarshal(raw, &p); err != nil || !isObject(raw) {
		return nil, invalid(field, `must be an object such as {"kind":"NeverConfirm"}`)
	}
	switch p.Kind {
	case "NeverConfirm", "AlwaysConfirm":
		return EncodeJSON(struct {
			Kind string `json:"kind"`
		}{p.Kind})
	case "ConfirmRisky":
		threshold, unknown := "HIGH", true
		if p.Threshold != nil {
			threshold = *p.Threshold
		}
		if !slices.Contains(securityRisk, threshold) {
			return nil, invalid(field, "threshold must be LOW, MEDIUM or HIGH")
		}
		if p.ConfirmUnknown != nil {
			unknown = *p.ConfirmUnknown
		}
		return EncodeJSON(struct {
			Threshold      string `json:"threshold"`
			ConfirmUnknown bool   `json:"confirm_unknown"`
			Kind           string `json:"kind"`
		}{threshold, unknown, p.Kind})
	}
	return nil, invalid(field, "kind must be NeverConfirm, AlwaysConfirm or ConfirmRisky")
}

// securityAnalyzers are upstream's security analyzer kinds.
var securityAnalyzers = []string{"LLMSecurityAnalyzer", "GraySwanAnalyzer", "EnsembleSecurityAnalyzer",
	"ToolShieldLLMSecurityAnalyzer", "PatternSecurityAnalyzer", "PolicyRailSecurityAnalyzer"}

// ParseSecurityAnalyzer checks a security analyzer: null (none), or an
// object whose kind is one of upstream's analyzers. It returns nil for null.
func ParseSecurityAnalyzer(field string, raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	var a struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(raw, &a); err != nil || !isObject(raw) {
		return nil, invalid(field, `must be null or an object such as {"kind":"LLMSecurityAnalyzer"}`)
	}
	if !slices.Contains(securityAnalyzers, a.Kind) {
		return nil, invalid(field, "kind must be one of %s", strings.Join(securityAnalyzers, ", "))
	}
	return compact(raw), nil
}

// ParseSecrets reads a {NAME: secret} map as upstream's /secrets takes it:
// each value a string (a StaticSecret's value), an object with "value" and
// no kind (also a StaticSecret), or a StaticSecret or LookupSecret object.
// An empty or redacted value ("**********") is an error: it would store
// nothing.
func ParseSecrets(field string, raw json.RawMessage) (map[string]SecretSource, error) {
	var in map[string]json.RawMessage
	if err := json.Unmarshal(raw, &in); err != nil || !isObject(raw) {
		return nil, invalid(field, `must be an object {"NAME": "value" or {"kind": ...}}`)
	}
	out := make(map[string]SecretSource, len(in))
	for name, v := range in {
		f := field + "." + name
		if strings.TrimSpace(name) == "" {
			return nil, invalid(field, "a secret name must not be empty")
		}
		var s SecretSource
		var str string
		if json.Unmarshal(v, &str) == nil {
			s = SecretSource{Kind: SecretStatic, Value: Secret(str)}
		} else {
			var obj struct {
				Kind        string            `json:"kind"`
				Description *string           `json:"description"`
				Value       *string           `json:"value"`
				URL         *string           `json:"url"`
				Headers     map[string]string `json:"headers"`
			}
			if err := json.Unmarshal(v, &obj); err != nil || !isObject(v) {
				return nil, invalid(f, "must be a string or a secret source object")
			}
			if obj.Kind == "" {
				obj.Kind = SecretStatic
			}
			s.Kind = obj.Kind
			if obj.Description != nil {
				s.Description = *obj.Description
			}
			switch obj.Kind {
			case SecretStatic:
				if obj.Value != nil {
					s.Value = Secret(*obj.Value)
				}
			case SecretLookup:
				if obj.URL == nil || *obj.URL == "" {
					return nil, invalid(f, "a LookupSecret needs a url")
				}
				s.URL, s.Headers = *obj.URL, obj.Headers
			default:
				return nil, invalid(f, "kind must be StaticSecret or LookupSecret")
			}
		}
		if s.Kind == SecretStatic && (strings.TrimSpace(string(s.Value)) == "" || string(s.Value) == RedactedSecret) {
			return nil, invalid(f, "the value is empty or redacted")
		}
		out[name] = s
	}
	return out, nil
}

// tagKey is what upstream allows as a tag name.
var tagKey = regexp.MustCompile(`^[a-z0-9]+$`)

// ParseTags checks tags: names of lower-case letters and digits, values of
// at most 256 characters.
func ParseTags(field string, raw json.RawMessage) (map[string]string, error) {
	var tags map[string]string
	if err := json.Unmarshal(raw, &tags); err != nil || !isObject(raw) {
		return nil, invalid(field, "must be an object of strings")
	}
	for k, v := range tags {
		if !tagKey.MatchString(k) {
			return nil, invalid(field, "tag name %q must be lower-case letters and digits", truncate(k, 32))
		}
		if utf8.RuneCountInString(v) > maxTagValue {
			return nil, invalid(field, "tag %q is longer than %d characters", k, maxTagValue)
		}
	}
	return tags, nil
}

// ParseTitle checks a title: stripped, 1 to 200 characters.
func ParseTitle(field, title string) (string, error) {
	t := strings.TrimSpace(title)
	if n := utf8.RuneCountInString(t); n < 1 || n > MaxTitleLength {
		return "", invalid(field, "must be 1 to %d characters", MaxTitleLength)
	}
	return t, nil
}

// NormalizeAgent checks an agent and gives a bare one (an object with llm
// and no kind) the kind "Agent", as upstream does.
func NormalizeAgent(field string, raw json.RawMessage) (json.RawMessage, error) {
	return withDefaultKind(field, raw, "llm", "Agent")
}

// NormalizeWorkspace checks a workspace and gives one without a kind the
// kind "LocalWorkspace", the only one upstream's server takes.
func NormalizeWorkspace(field string, raw json.RawMessage) (json.RawMessage, error) {
	out, err := withDefaultKind(field, raw, "", "LocalWorkspace")
	if err != nil {
		return nil, err
	}
	var ws struct {
		WorkingDir *string `json:"working_dir"`
	}
	if json.Unmarshal(out, &ws) != nil || ws.WorkingDir == nil {
		return nil, invalid(field, `needs "working_dir"`)
	}
	return out, nil
}

// withDefaultKind sets "kind" to kind on an object that lacks it and has
// the field need (any object when need is "").
func withDefaultKind(field string, raw json.RawMessage, need, kind string) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || !isObject(raw) {
		return nil, invalid(field, "must be an object")
	}
	_, hasNeed := obj[need]
	if _, ok := obj["kind"]; ok || (need != "" && !hasNeed) {
		return compact(raw), nil
	}
	k, _ := EncodeJSON(kind)
	obj["kind"] = k
	return EncodeJSON(obj)
}

// AutoTitle is upstream's fallback title for a first user message: the
// stripped text, cut to 47 characters and "..." when longer than 50.
func AutoTitle(text string) string {
	t := strings.TrimSpace(text)
	if utf8.RuneCountInString(t) <= AutoTitleLength {
		return t
	}
	r := []rune(t)
	return string(r[:AutoTitleLength-3]) + "..."
}

// MessageText joins the text parts of a message's content, as upstream
// does to title a conversation.
func MessageText(parts []ContentPart) string {
	var texts []string
	for _, p := range parts {
		if p.Type == "text" && p.Text != "" {
			texts = append(texts, p.Text)
		}
	}
	return strings.TrimSpace(strings.Join(texts, " "))
}

// MergeSecrets returns old with add's entries added or replaced.
func MergeSecrets(old, add map[string]SecretSource) map[string]SecretSource {
	out := maps.Clone(old)
	if out == nil {
		out = make(map[string]SecretSource, len(add))
	}
	maps.Copy(out, add)
	return out
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// compact returns raw without insignificant whitespace, or raw when it is
// not valid JSON.
func compact(raw json.RawMessage) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	return buf.Bytes()
}
