package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/agent-server/agent-server/core"
)

// createRequest is the body of POST /api/conversations: upstream's
// StartConversationRequest. The fields the conversation's state holds are
// read here; the others (plugins, tool_module_qualnames, agent_definitions,
// ...) are kept for the conversation's runtime (Conversation.Launch).
type createRequest struct {
	ConversationID       *string         `json:"conversation_id"`
	Agent                json.RawMessage `json:"agent"`
	Workspace            json.RawMessage `json:"workspace"`
	InitialMessage       json.RawMessage `json:"initial_message"`
	ConfirmationPolicy   json.RawMessage `json:"confirmation_policy"`
	SecurityAnalyzer     json.RawMessage `json:"security_analyzer"`
	MaxIterations        *int            `json:"max_iterations"`
	StuckDetection       *bool           `json:"stuck_detection"`
	Secrets              json.RawMessage `json:"secrets"`
	HookConfig           json.RawMessage `json:"hook_config"`
	Tags                 json.RawMessage `json:"tags"`
	ClientTools          json.RawMessage `json:"client_tools"`
	ParentConversationID *string         `json:"parent_conversation_id"`
	Autotitle            *bool           `json:"autotitle"`
}

// stateFields are the createRequest fields the state holds; Launch keeps
// the rest.
var stateFields = []string{"conversation_id", "agent", "workspace", "initial_message", "confirmation_policy",
	"security_analyzer", "max_iterations", "stuck_detection", "secrets", "hook_config", "tags", "client_tools",
	"parent_conversation_id", "autotitle"}

// searchPage is the answer of a conversation search.
type searchPage struct {
	Items      []*core.ConversationInfo `json:"items"`
	NextPageID *string                  `json:"next_page_id"`
}

// createConversation is POST /api/conversations: 201 with the new
// conversation, or 200 with the existing one when conversation_id exists.
// Fields left out take upstream's defaults. An initial_message is posted as
// a user MessageEvent, only on creation, and runs the agent if it says so.
func (a *restAPI) createConversation(w http.ResponseWriter, r *http.Request, c *restCall) error {
	var raw json.RawMessage
	if err := a.readJSON(w, r, &raw); err != nil {
		return err
	}
	var req createRequest
	var rest map[string]json.RawMessage
	if err := json.Unmarshal(raw, &req); err != nil {
		return decodeError(err)
	}
	if json.Unmarshal(raw, &rest) != nil || rest == nil {
		return badRequest("request body must be a JSON object")
	}
	id := core.NewID()
	if req.ConversationID != nil {
		var err error
		if id, err = core.NormalizeID(*req.ConversationID); err != nil {
			return badRequest("conversation_id is not a UUID")
		}
	}
	if !c.principal.CanAccess(id) {
		return &apiError{status: http.StatusForbidden, detail: "Forbidden: this credential may not use that conversation"}
	}
	var msg *core.UserMessage
	if raw := nonNull(req.InitialMessage); raw != nil {
		m, err := core.ParseClientFrame(raw)
		if err != nil {
			return badRequest("initial_message: " + frameDetail(err))
		}
		msg = m
	}
	now := a.now().UTC()
	conv, err := newConversation(id, &req, rest)
	if err != nil {
		return controlError(err, "")
	}
	conv.CreatedAt, conv.UpdatedAt = now, now
	if conv.ParentConversationID != "" {
		if _, err := a.store.Conversation(r.Context(), conv.ParentConversationID); err != nil {
			return backendError(fmt.Errorf("read parent conversation: %w", err), "parent_conversation_id: no such conversation")
		}
	}
	stored, created, err := a.backend.CreateConversation(r.Context(), conv)
	if err != nil {
		return backendError(fmt.Errorf("create conversation %s: %w", id, err), "Conversation not found")
	}
	if !created {
		if stored.ExecutionStatus == core.StatusDeleting {
			return &apiError{status: http.StatusConflict, detail: "Conversation is being deleted"}
		}
		writeJSON(w, http.StatusOK, stored.Info(false))
		return nil
	}
	if msg != nil {
		if _, err := a.backend.PostEvent(r.Context(), stored.ID, core.SourceUser, core.KindMessage, core.MessageBody(msg)); err != nil {
			return backendError(fmt.Errorf("post initial message to %s: %w", stored.ID, err), "Conversation not found")
		}
		if stored, err = a.store.Conversation(r.Context(), stored.ID); err != nil { // titled by the message
			return backendError(fmt.Errorf("read conversation %s: %w", stored.ID, err), "Conversation not found")
		}
		if msg.Run {
			if err := a.backend.Run(r.Context(), stored.ID, true); err != nil {
				ae := controlError(err, "Conversation not found")
				ae.detail = "The conversation was created, but the agent could not run: " + ae.detail
				return ae
			}
		}
	}
	writeJSON(w, http.StatusCreated, stored.Info(false))
	return nil
}

// newConversation builds a conversation from a create request, checking
// each field and filling in upstream's defaults (see core/state.go).
func newConversation(id string, req *createRequest, rest map[string]json.RawMessage) (*core.Conversation, error) {
	conv := &core.Conversation{ID: id, ExecutionStatus: core.StatusIdle}
	var err error
	if raw := nonNull(req.Agent); raw != nil {
		if conv.Agent, err = core.NormalizeAgent("agent", raw); err != nil {
			return nil, err
		}
	}
	if raw := nonNull(req.Workspace); raw != nil {
		if conv.Workspace, err = core.NormalizeWorkspace("workspace", raw); err != nil {
			return nil, err
		}
	}
	if raw := nonNull(req.ConfirmationPolicy); raw != nil {
		if conv.ConfirmationPolicy, err = core.ParseConfirmationPolicy("confirmation_policy", raw); err != nil {
			return nil, err
		}
	}
	if conv.SecurityAnalyzer, err = core.ParseSecurityAnalyzer("security_analyzer", req.SecurityAnalyzer); err != nil {
		return nil, err
	}
	if req.MaxIterations != nil {
		if *req.MaxIterations < 1 {
			return nil, &core.ValidationError{Field: "max_iterations", Detail: "must be at least 1"}
		}
		conv.MaxIterations = *req.MaxIterations
	}
	if req.StuckDetection != nil && !*req.StuckDetection {
		conv.StuckDetection = req.StuckDetection
	}
	if raw := nonNull(req.Secrets); raw != nil {
		if conv.Secrets, err = core.ParseSecrets("secrets", raw); err != nil {
			return nil, err
		}
		if len(conv.Secrets) == 0 {
			conv.Secrets = nil
		}
	}
	if raw := nonNull(req.Tags); raw != nil {
		if conv.Tags, err = core.ParseTags("tags", raw); err != nil {
			return nil, err
		}
	}
	conv.HookConfig = nonNull(req.HookConfig)
	if raw := nonNull(req.ClientTools); raw != nil {
		if !strings.HasPrefix(strings.TrimSpace(string(raw)), "[") {
			return nil, &core.ValidationError{Field: "client_tools", Detail: "must be a list"}
		}
		conv.ClientTools = raw
	}
	if req.ParentConversationID != nil {
		if conv.ParentConversationID, err = core.NormalizeID(*req.ParentConversationID); err != nil {
			return nil, &core.ValidationError{Field: "parent_conversation_id", Detail: "is not a UUID"}
		}
	}
	conv.NoAutotitle = req.Autotitle != nil && !*req.Autotitle
	for _, f := range stateFields {
		delete(rest, f)
	}
	if len(rest) > 0 {
		if conv.Launch, err = core.EncodeJSON(rest); err != nil {
			return nil, &core.ValidationError{Field: "body", Detail: "could not be read"}
		}
	}
	return conv, nil
}

// batchConversations is GET /api/conversations?ids=a&ids=b (or ids=a,b): a
// list in the order asked, with null for each unknown conversation and for
// each one outside the principal's scopes.
func (a *restAPI) batchConversations(w http.ResponseWriter, r *http.Request, c *restCall) error {
	var ids []string
	for _, v := range c.query["ids"] {
		for _, raw := range strings.Split(v, ",") {
			if raw = strings.TrimSpace(raw); raw == "" {
				continue
			}
			id, err := core.NormalizeID(raw)
			if err != nil {
				return badRequest(fmt.Sprintf("ids[%d] is not a UUID", len(ids)))
			}
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return badRequest("ids is required: ?ids=<uuid>&ids=<uuid> or ?ids=<uuid>,<uuid>")
	}
	if len(ids) > maxBatchIDs {
		return badRequest(fmt.Sprintf("at most %d ids per request", maxBatchIDs))
	}
	out := make([]*core.ConversationInfo, len(ids))
	for i, id := range ids {
		if !c.principal.CanAccess(id) {
			continue
		}
		conv, err := a.store.Conversation(r.Context(), id)
		switch {
		case errors.Is(err, core.ErrNotFound):
		case err != nil:
			return backendError(fmt.Errorf("read conversation %s: %w", id, err), "Conversation not found")
		default:
			out[i] = conv.Info(includeSkills(c))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// conversationFilter reads execution_status and applies the principal's
// scopes.
func conversationFilter(c *restCall) (core.ConversationFilter, error) {
	f := core.ConversationFilter{Allow: c.filterScopes()}
	if s := c.queryValue("execution_status"); s != "" {
		st, err := core.ParseStatus(s)
		if err != nil {
			return f, badRequest(err.Error())
		}
		f.Status = st
	}
	return f, nil
}

// searchConversations is GET /api/conversations/search.
func (a *restAPI) searchConversations(w http.ResponseWriter, r *http.Request, c *restCall) error {
	f, err := conversationFilter(c)
	if err != nil {
		return err
	}
	order, err := core.ParseConversationOrder(c.queryValue("sort_order"))
	if err != nil {
		return badRequest(err.Error())
	}
	limit, err := core.ParseLimit(c.queryValue("limit"))
	if err != nil {
		return badRequest(err.Error())
	}
	var cursor *core.Conversation
	if pageID := c.queryValue("page_id"); pageID != "" {
		if cursor, err = a.conversationCursor(r, c, pageID); err != nil {
			return err
		}
	}
	all, err := a.store.Conversations(r.Context())
	if err != nil {
		return backendError(fmt.Errorf("list conversations: %w", err), "Not found")
	}
	page := core.SearchConversations(all, f, order, cursor, limit)
	out := searchPage{Items: make([]*core.ConversationInfo, 0, len(page.Items)), NextPageID: optional(page.NextPageID)}
	for _, conv := range page.Items {
		out.Items = append(out.Items, conv.Info(includeSkills(c)))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// conversationCursor resolves a conversation search's page_id. A page_id the
// principal may not see is as unknown as one that does not exist.
func (a *restAPI) conversationCursor(r *http.Request, c *restCall, pageID string) (*core.Conversation, error) {
	id, err := core.NormalizeID(pageID)
	if err != nil {
		return nil, badRequest("page_id is not a conversation id")
	}
	if !c.principal.CanAccess(id) {
		return nil, badRequest("page_id does not name a conversation")
	}
	conv, err := a.store.Conversation(r.Context(), id)
	if errors.Is(err, core.ErrNotFound) {
		return nil, badRequest("page_id does not name a conversation")
	}
	if err != nil {
		return nil, backendError(fmt.Errorf("read page_id conversation %s: %w", id, err), "Not found")
	}
	return conv, nil
}

// countConversations is GET /api/conversations/count.
func (a *restAPI) countConversations(w http.ResponseWriter, r *http.Request, c *restCall) error {
	f, err := conversationFilter(c)
	if err != nil {
		return err
	}
	all, err := a.store.Conversations(r.Context())
	if err != nil {
		return backendError(fmt.Errorf("list conversations: %w", err), "Not found")
	}
	writeJSON(w, http.StatusOK, core.CountConversations(all, f))
	return nil
}

// getConversation is GET /api/conversations/{conversation_id}.
func (a *restAPI) getConversation(w http.ResponseWriter, r *http.Request, c *restCall) error {
	conv, err := a.store.Conversation(r.Context(), c.convID)
	if err != nil {
		return backendError(fmt.Errorf("read conversation %s: %w", c.convID, err), "Conversation not found")
	}
	writeJSON(w, http.StatusOK, conv.Info(includeSkills(c)))
	return nil
}

// includeSkills reads ?include_skills=true: the agent's skills are trimmed
// from conversation answers otherwise, as upstream trims them.
func includeSkills(c *restCall) bool {
	return strings.EqualFold(c.queryValue("include_skills"), "true")
}

// deleteConversation is DELETE /api/conversations/{conversation_id}; the
// backend closes the conversation's sockets with 4004.
func (a *restAPI) deleteConversation(w http.ResponseWriter, r *http.Request, c *restCall) error {
	if err := a.backend.DeleteConversation(r.Context(), c.convID); err != nil {
		return backendError(fmt.Errorf("delete conversation %s: %w", c.convID, err), "Conversation not found")
	}
	writeJSON(w, http.StatusOK, success)
	return nil
}

// nonNull returns raw, or nil when it is absent or JSON null.
func nonNull(raw json.RawMessage) json.RawMessage {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil
	}
	return raw
}

// optional returns nil for "" so it marshals as null.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// frameDetail returns the client-facing text of a ParseClientFrame error.
func frameDetail(err error) string {
	var fe *core.FrameError
	if errors.As(err, &fe) {
		return fe.Detail
	}
	if errors.Is(err, core.ErrAuthFrame) {
		return `expected {"role":"user","content":...}`
	}
	return "invalid message"
}
