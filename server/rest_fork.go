package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"unicode/utf8"

	"github.com/agent-server/agent-server/core"
)

// The event tree's endpoints (openhands-agent-server 1.43.1), with
// upstream's bodies, answers and status codes:
//
//	POST /fork      ForkConversationRequest (the body optional) -> 201 ConversationInfo of the fork
//	POST /navigate  {"event_id": str|null} (the body required)   -> 200 ConversationInfo
//
// A fork is a new conversation: a principal limited to some conversations
// may fork one it may use (the path's, checked like every route's) only
// into one it may use too, so it must name the fork's id.

// forkRequest is upstream's ForkConversationRequest. Unknown fields are
// ignored, as upstream's model ignores them.
type forkRequest struct {
	ID           *string         `json:"id"`
	Title        *string         `json:"title"`
	Tags         json.RawMessage `json:"tags"`
	ResetMetrics json.RawMessage `json:"reset_metrics"`
	FromEventID  *string         `json:"from_event_id"`
}

// parseForkRequest checks a fork's body; an empty one takes every
// default (a new id, no title or tags, fresh metrics, the whole log).
func parseForkRequest(body []byte) (core.ForkRequest, error) {
	var req core.ForkRequest
	if len(body) == 0 || string(body) == "null" {
		return req, nil
	}
	var in forkRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return req, decodeError(err)
	}
	if in.ID != nil {
		id, err := core.NormalizeID(*in.ID)
		if err != nil {
			return req, badRequest("id is not a UUID")
		}
		req.ID = id
	}
	if in.Title != nil {
		if n := utf8.RuneCountInString(*in.Title); n > core.MaxTitleLength {
			return req, badRequest(fmt.Sprintf("title: must be at most %d characters, got %d", core.MaxTitleLength, n))
		}
		req.Title = in.Title
	}
	if raw := nonNull(in.Tags); raw != nil {
		tags, err := core.ParseTags("tags", raw)
		if err != nil {
			return req, badRequest(err.Error())
		}
		req.Tags = tags
	}
	if in.ResetMetrics != nil {
		var reset bool
		if err := json.Unmarshal(in.ResetMetrics, &reset); err != nil || string(in.ResetMetrics) == "null" {
			return req, badRequest(`"reset_metrics" must be true or false`)
		}
		req.KeepMetrics = !reset
	}
	if in.FromEventID != nil {
		if *in.FromEventID == "" { // upstream looks "" up, and finds nothing
			return req, &core.UnknownEventError{Field: "from_event_id"}
		}
		req.FromEventID = *in.FromEventID
	}
	return req, nil
}

// forkError maps a fork's failure to upstream's answers.
func forkError(err error, id string) error {
	var unknown *core.UnknownEventError
	var tooLarge *core.ForkTooLargeError
	switch {
	case errors.As(err, &unknown):
		return notFound(unknown.Error())
	case errors.As(err, &tooLarge):
		return badRequest(tooLarge.Error())
	case errors.Is(err, core.ErrConversationExists):
		return &apiError{status: http.StatusConflict, detail: fmt.Sprintf("Conversation with id %s already exists", id)}
	}
	return backendError(err, "Source conversation not found")
}

// fork is POST /api/conversations/{id}/fork: 201 with the fork's
// ConversationInfo.
func (a *restAPI) fork(w http.ResponseWriter, r *http.Request, c *restCall) error {
	body, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := parseForkRequest(body)
	if err != nil {
		return forkError(err, req.ID)
	}
	if len(c.principal.Scopes) > 0 && (req.ID == "" || !c.principal.CanAccess(req.ID)) {
		return &apiError{status: http.StatusForbidden, detail: "Forbidden: a credential limited to some conversations must give the fork an id it may use"}
	}
	fork, err := a.backend.ForkConversation(r.Context(), c.convID, req)
	if err != nil {
		return forkError(err, req.ID)
	}
	writeJSON(w, http.StatusCreated, fork.Info(includeSkills(c)))
	return nil
}

// navigate is POST /api/conversations/{id}/navigate {"event_id": ...}:
// 200 with the conversation's ConversationInfo, whose leaf_event_id is
// the new HEAD.
func (a *restAPI) navigate(w http.ResponseWriter, r *http.Request, c *restCall) error {
	body, err := a.readFields(w, r)
	if err != nil {
		return err
	}
	eventID, err := parseEventID(body["event_id"])
	if err != nil {
		return err
	}
	if err := a.backend.Navigate(r.Context(), c.convID, eventID); err != nil {
		var unknown *core.UnknownEventError
		if errors.As(err, &unknown) {
			return notFound(unknown.Error())
		}
		return controlError(err, "Conversation not found")
	}
	conv, err := a.store.Conversation(r.Context(), c.convID)
	if err != nil {
		return backendError(fmt.Errorf("read conversation %s: %w", c.convID, err), "Conversation not found")
	}
	writeJSON(w, http.StatusOK, conv.Info(includeSkills(c)))
	return nil
}

// parseEventID reads navigate's event_id: absent or null is no event
// (""); "" names none, as upstream finds it in no log.
func parseEventID(raw json.RawMessage) (string, error) {
	if nonNull(raw) == nil {
		return "", nil
	}
	var id string
	if err := json.Unmarshal(raw, &id); err != nil {
		return "", badRequest(`"event_id" must be a string or null`)
	}
	if id == "" {
		return "", notFound((&core.UnknownEventError{Field: "event_id"}).Error())
	}
	return id, nil
}
