package core

import (
	"encoding/json"
	"fmt"
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

// Conversation is a conversation's metadata. Agent and Workspace are kept
// exactly as the client sent them.
type Conversation struct {
	ID              string          `json:"id"`
	Agent           json.RawMessage `json:"agent,omitempty"`
	Workspace       json.RawMessage `json:"workspace,omitempty"`
	ExecutionStatus ExecutionStatus `json:"execution_status"`
	Stats           json.RawMessage `json:"stats,omitempty"`
	Title           string          `json:"title,omitempty"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
}

// Clone returns a copy that shares no mutable state with c.
func (c *Conversation) Clone() *Conversation {
	cp := *c
	return &cp
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
