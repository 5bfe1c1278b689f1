package core

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
)

// ExecutionStatus is a conversation's run state, as OpenHands names it.
type ExecutionStatus string

// The execution states.
const (
	StatusIdle     ExecutionStatus = "idle"
	StatusRunning  ExecutionStatus = "running"
	StatusPaused   ExecutionStatus = "paused"
	StatusWaiting  ExecutionStatus = "waiting_for_confirmation"
	StatusFinished ExecutionStatus = "finished"
	StatusError    ExecutionStatus = "error"
	StatusStuck    ExecutionStatus = "stuck"
	StatusDeleting ExecutionStatus = "deleting"
)

// Conversation is a conversation's metadata and OpenHands state, as the
// stores keep it (as JSON). Agent and Workspace are kept as the client sent
// them, secrets included: never write a Conversation to a client or a log
// as it is; render it with Info, FullState or RuntimeState (state.go),
// which mask the secrets per channel. A zero field means upstream's default
// (see state.go), so conversations stored before a field existed read as
// that default.
type Conversation struct {
	ID              string          `json:"id"`
	Agent           json.RawMessage `json:"agent,omitempty"`
	Workspace       json.RawMessage `json:"workspace,omitempty"`
	ExecutionStatus ExecutionStatus `json:"execution_status"`
	Stats           json.RawMessage `json:"stats,omitempty"`
	Title           string          `json:"title,omitempty"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`

	MaxIterations        int                     `json:"max_iterations,omitempty"`      // 0: DefaultMaxIterations
	StuckDetection       *bool                   `json:"stuck_detection,omitempty"`     // nil: true
	ConfirmationPolicy   json.RawMessage         `json:"confirmation_policy,omitempty"` // nil: NeverConfirm
	SecurityAnalyzer     json.RawMessage         `json:"security_analyzer,omitempty"`
	Secrets              map[string]SecretSource `json:"secrets,omitempty"` // with their values; secret
	Tags                 map[string]string       `json:"tags,omitempty"`
	HookConfig           json.RawMessage         `json:"hook_config,omitempty"`
	ClientTools          json.RawMessage         `json:"client_tools,omitempty"`
	AgentState           json.RawMessage         `json:"agent_state,omitempty"`
	ActivatedSkills      []string                `json:"activated_knowledge_skills,omitempty"`
	InvokedSkills        []string                `json:"invoked_skills,omitempty"`
	BlockedActions       map[string]string       `json:"blocked_actions,omitempty"`
	BlockedMessages      map[string]string       `json:"blocked_messages,omitempty"`
	ParentConversationID string                  `json:"parent_conversation_id,omitempty"`
	NoAutotitle          bool                    `json:"no_autotitle,omitempty"` // the create request's autotitle: false
	// ForkedFromConversationID and ForkedFromEventID say what a fork
	// (fork.go) was copied from: the source and, when only a branch was
	// copied, the event it ended at.
	ForkedFromConversationID string `json:"forked_from_conversation_id,omitempty"`
	ForkedFromEventID        string `json:"forked_from_event_id,omitempty"`
	// Head is the event tree's HEAD when the state was last written
	// (tree.go): ResolveHead brings it up to date with the log.
	Head Head `json:"head,omitzero"`
	// Launch is what else the create request carried (plugins,
	// tool_module_qualnames, agent_definitions, ...), kept for the
	// conversation's runtime and never shown to clients.
	Launch json.RawMessage `json:"launch,omitempty"`
}

// Clone returns a copy that shares no mutable state with c. (JSON raw
// values are never modified in place, so they are shared.)
func (c *Conversation) Clone() *Conversation {
	cp := *c
	cp.StuckDetection = clonePtr(c.StuckDetection)
	cp.Secrets = maps.Clone(c.Secrets)
	for k, s := range cp.Secrets {
		s.Headers = maps.Clone(s.Headers)
		cp.Secrets[k] = s
	}
	cp.Tags = maps.Clone(c.Tags)
	cp.ActivatedSkills = slices.Clone(c.ActivatedSkills)
	cp.InvokedSkills = slices.Clone(c.InvokedSkills)
	cp.BlockedActions = maps.Clone(c.BlockedActions)
	cp.BlockedMessages = maps.Clone(c.BlockedMessages)
	return &cp
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// NormalizeID validates a conversation ID as a UUID and returns its
// canonical lower-case hyphenated form. Hex without hyphens is accepted too,
// as OpenHands' clients sometimes send it.
func NormalizeID(id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", fmt.Errorf("conversation id %q is not a UUID", truncate(id, 64))
	}
	return u.String(), nil
}

// NewID returns a new random UUID string.
func NewID() string { return uuid.NewString() }

// NewEventID returns a new time-ordered (version 7) UUID string. Event IDs
// made in order sort in order, so a store's ID index grows at its end
// instead of at random places.
func NewEventID() string {
	u, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return u.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
