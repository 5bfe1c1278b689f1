package core

import (
	"fmt"
	"maps"
	"time"
)

// This file is what a fork of a conversation starts as (upstream's
// POST /api/conversations/{id}/fork, openhands-agent-server 1.43.1): a new
// conversation holding copies of the source's events, with their IDs,
// and the source's configuration, idle, with its own identity.

// ForkRequest is upstream's ForkConversationRequest, checked.
type ForkRequest struct {
	// ID is the fork's ID, canonical; "" makes one up.
	ID string
	// Title, when set, is the fork's title and its tags["title"].
	Title *string
	// Tags are the fork's tags (the source's are not copied).
	Tags map[string]string
	// KeepMetrics copies the source's stats (reset_metrics: false);
	// otherwise the fork's start empty.
	KeepMetrics bool
	// FromEventID, when set, copies only the branch that ends at that event
	// (Branch), which becomes the fork's HEAD; otherwise the whole log is
	// copied, and the source's HEAD with it.
	FromEventID string
}

// TitleTag is the tag a fork's title is copied to, as upstream does.
const TitleTag = "title"

// NewFork returns the conversation a fork of src with the given ID starts
// as, at now, whose event tree's HEAD is head. It keeps what configures
// src (agent, workspace, limits, policies, secrets, hooks, client tools,
// what its runtime was launched with) and what its agent accumulated
// (agent_state, activated_knowledge_skills); the rest starts afresh: idle,
// no title but req's, req's tags, empty stats unless req.KeepMetrics, and
// forked_from_* naming src.
func NewFork(src *Conversation, id string, req ForkRequest, head Head, now time.Time) *Conversation {
	s := src.Clone()
	f := &Conversation{
		ID:                       id,
		Agent:                    s.Agent,
		Workspace:                s.Workspace,
		ExecutionStatus:          StatusIdle,
		CreatedAt:                now,
		UpdatedAt:                now,
		MaxIterations:            s.MaxIterations,
		StuckDetection:           s.StuckDetection,
		ConfirmationPolicy:       s.ConfirmationPolicy,
		SecurityAnalyzer:         s.SecurityAnalyzer,
		Secrets:                  s.Secrets,
		HookConfig:               s.HookConfig,
		ClientTools:              s.ClientTools,
		AgentState:               s.AgentState,
		ActivatedSkills:          s.ActivatedSkills,
		ParentConversationID:     s.ParentConversationID,
		NoAutotitle:              s.NoAutotitle,
		Launch:                   s.Launch,
		ForkedFromConversationID: src.ID,
		ForkedFromEventID:        req.FromEventID,
		Head:                     head,
	}
	if req.KeepMetrics {
		f.Stats = s.Stats
	}
	if len(req.Tags) > 0 || req.Title != nil {
		f.Tags = maps.Clone(req.Tags)
		if f.Tags == nil {
			f.Tags = make(map[string]string, 1)
		}
	}
	if req.Title != nil {
		f.Title = *req.Title
		f.Tags[TitleTag] = *req.Title
	}
	return f
}

// UnknownEventError is an event ID a request names that is not in the
// conversation: REST answers 404 with its text, upstream's detail.
type UnknownEventError struct {
	Field   string // the request's field: event_id, from_event_id
	EventID string
}

// Error is upstream's detail: "Unknown event_id: <id>".
func (e *UnknownEventError) Error() string {
	return fmt.Sprintf("Unknown %s: %s", e.Field, truncate(e.EventID, 64))
}

// ForkTooLargeError is a fork that would copy more events than
// conversations.max_fork_events allows.
type ForkTooLargeError struct {
	Events int // how many it would copy; 0 when only "more than Max" is known (a branch)
	Max    int
}

// Error says how many events and the limit, naming its key.
func (e *ForkTooLargeError) Error() string {
	if e.Events <= e.Max { // a branch: too long, or its root too far back to read
		return fmt.Sprintf("the fork would copy or read more than %d events; at most %d may be (conversations.max_fork_events)", e.Max, e.Max)
	}
	return fmt.Sprintf("the fork would copy %d events; at most %d may be copied (conversations.max_fork_events)", e.Events, e.Max)
}
