package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/agent-server/agent-server/core"
)

// The control endpoints of upstream's conversation router, with its paths,
// bodies and status codes (openhands-agent-server 1.43.1). Each is
// authenticated by the rest chain like every /api route, checked here, and
// carried out by the conversation's actor (through the backend), which
// records it as state and forwards it to the conversation's agent runtime.
//
//	POST  /run, /pause, /interrupt                     run control
//	POST  /secrets, /confirmation_policy,              settings (state)
//	      /security_analyzer, /switch_llm; PATCH {id}
//	POST  /events/respond_to_confirmation
//	POST  /ask_agent, /condense, /load_plugin,         answered by the runtime
//	      /switch_profile, /switch_acp_model, /goal,
//	      /goal/stop, /goal/resume
//	GET   /agent_final_response                        read from the log
//	POST  /fork, /navigate                             the event tree (rest_fork.go)
//
// Upstream answers 422 for a body that fails validation; these answer 400,
// as the rest of this API does. Where upstream's status for an unknown
// conversation is odd (400 for pause and interrupt, 200 {"success": false}
// for PATCH) it is kept; ask_agent answers 404 where upstream fails with 500.

// controlBackend is what the control endpoints need from the actor system.
type controlBackend interface {
	// Run starts a run; see actors.System.Run.
	Run(ctx context.Context, id string, allowRunning bool) error
	// Pause pauses or interrupts the run.
	Pause(ctx context.Context, id string, interrupt bool) error
	// ChangeSettings applies a client's settings.
	ChangeSettings(ctx context.Context, id string, st core.Settings) error
	// RejectPending forwards a rejection of the pending actions.
	RejectPending(ctx context.Context, id, reason string) error
	// AskRuntime forwards a command the runtime answers.
	AskRuntime(ctx context.Context, id, command string, params json.RawMessage) (core.Reply, error)
	// PublishEvent stores an event a runtime published.
	PublishEvent(ctx context.Context, id string, p *core.Published) (*core.Event, error)
	// Navigate moves the event tree's HEAD; see actors.System.Navigate.
	Navigate(ctx context.Context, id, eventID string) error
	// ForkConversation forks a conversation; see
	// actors.System.ForkConversation.
	ForkConversation(ctx context.Context, sourceID string, req core.ForkRequest) (*core.Conversation, error)
}

// defaultRejectReason is upstream's respond_to_confirmation reason.
const defaultRejectReason = "User rejected the action."

// mountControl registers the control endpoints.
func (a *restAPI) mountControl() {
	const conv = "/api/conversations/{conversation_id}"
	a.handle("POST "+conv+"/run", a.run)
	a.handle("POST "+conv+"/pause", a.pauseHandler(false))
	a.handle("POST "+conv+"/interrupt", a.pauseHandler(true))
	a.handle("POST "+conv+"/secrets", a.setting("secrets", parseSecrets))
	a.handle("POST "+conv+"/confirmation_policy", a.setting("policy", parsePolicy))
	a.handle("POST "+conv+"/security_analyzer", a.setting("security_analyzer", parseAnalyzer))
	a.handle("POST "+conv+"/switch_llm", a.setting("llm", parseLLM))
	a.handle("PATCH "+conv, a.patchConversation)
	a.handle("POST "+conv+"/events/respond_to_confirmation", a.respondToConfirmation)
	a.handle("GET "+conv+"/agent_final_response", a.agentFinalResponse)
	a.handle("POST "+conv+"/fork", a.fork)
	a.handle("POST "+conv+"/navigate", a.navigate)
	for path, f := range map[string]forwarded{
		"/ask_agent":        {core.CommandAskAgent, []string{"question"}},
		"/condense":         {core.CommandCondense, nil},
		"/load_plugin":      {core.CommandLoadPlugin, []string{"plugin_ref"}},
		"/switch_profile":   {core.CommandSwitchProfile, []string{"profile_name"}},
		"/switch_acp_model": {core.CommandSwitchACPModel, []string{"model"}},
		"/goal":             {core.CommandGoal, []string{"objective"}},
		"/goal/stop":        {core.CommandGoalStop, nil},
		"/goal/resume":      {core.CommandGoalResume, nil},
	} {
		a.handle("POST "+conv+path, a.forward(f))
	}
}

// controlError maps a control command's failure: a bad value 400, a run
// already running 409 (upstream's detail), no runtime 503, a runtime that
// did not answer 504 (or 502 when it left), the rest as backendError does.
func controlError(err error, notFoundDetail string) *apiError {
	var invalid *core.ValidationError
	var noRuntime *core.NoRuntimeError
	var timeout *core.RuntimeTimeoutError
	switch {
	case errors.As(err, &invalid):
		return badRequest(invalid.Error())
	case errors.Is(err, core.ErrAlreadyRunning):
		return &apiError{status: http.StatusConflict, detail: core.AlreadyRunningDetail}
	case errors.As(err, &noRuntime):
		return &apiError{status: http.StatusServiceUnavailable, detail: noRuntime.Error(), err: err}
	case errors.As(err, &timeout):
		return &apiError{status: http.StatusGatewayTimeout, detail: timeout.Error(), err: err}
	case errors.Is(err, core.ErrRuntimeLost):
		return &apiError{status: http.StatusBadGateway, detail: core.ErrRuntimeLost.Error(), err: err}
	}
	return backendError(err, notFoundDetail)
}

// run is POST /run: 200, 409 while running, 503 without a runtime.
func (a *restAPI) run(w http.ResponseWriter, r *http.Request, c *restCall) error {
	if err := a.backend.Run(r.Context(), c.convID, false); err != nil {
		return controlError(err, "Conversation not found")
	}
	writeJSON(w, http.StatusOK, success)
	return nil
}

// pauseHandler is POST /pause or /interrupt: 200 whatever the status, 400
// for an unknown conversation, as upstream answers.
func (a *restAPI) pauseHandler(interrupt bool) restFunc {
	return func(w http.ResponseWriter, r *http.Request, c *restCall) error {
		if err := a.backend.Pause(r.Context(), c.convID, interrupt); err != nil {
			if errors.Is(err, core.ErrNotFound) {
				return badRequest("Bad Request")
			}
			return controlError(err, "Conversation not found")
		}
		writeJSON(w, http.StatusOK, success)
		return nil
	}
}

// changeSettings applies st and answers {"success": true}.
func (a *restAPI) changeSettings(w http.ResponseWriter, r *http.Request, c *restCall, st core.Settings) error {
	if err := a.backend.ChangeSettings(r.Context(), c.convID, st); err != nil {
		return controlError(err, "Conversation not found")
	}
	writeJSON(w, http.StatusOK, success)
	return nil
}

// readFields reads a JSON object body and requires the named fields.
func (a *restAPI) readFields(w http.ResponseWriter, r *http.Request, required ...string) (map[string]json.RawMessage, error) {
	var body map[string]json.RawMessage
	if err := a.readJSON(w, r, &body); err != nil {
		return nil, err
	}
	if body == nil {
		return nil, badRequest("request body must be a JSON object")
	}
	for _, f := range required {
		if _, ok := body[f]; !ok {
			return nil, badRequest(fmt.Sprintf("%q is required", f))
		}
	}
	return body, nil
}

// setting is a settings endpoint: POST {field: value}, the value turned
// into core.Settings by parse.
func (a *restAPI) setting(field string, parse func(raw json.RawMessage) (core.Settings, error)) restFunc {
	return func(w http.ResponseWriter, r *http.Request, c *restCall) error {
		body, err := a.readFields(w, r, field)
		if err != nil {
			return err
		}
		st, err := parse(body[field])
		if err != nil {
			return controlError(err, "")
		}
		return a.changeSettings(w, r, c, st)
	}
}

// The settings endpoints' parsers: /secrets {"secrets": {NAME: value}},
// /confirmation_policy {"policy": {...}}, /security_analyzer
// {"security_analyzer": {...} or null} and /switch_llm {"llm": {...}}, which
// replaces the agent's llm.
func parseSecrets(raw json.RawMessage) (core.Settings, error) {
	s, err := core.ParseSecrets("secrets", raw)
	return core.Settings{Secrets: s}, err
}

func parsePolicy(raw json.RawMessage) (core.Settings, error) {
	p, err := core.ParseConfirmationPolicy("policy", raw)
	return core.Settings{ConfirmationPolicy: p}, err
}

func parseAnalyzer(raw json.RawMessage) (core.Settings, error) {
	a, err := core.ParseSecurityAnalyzer("security_analyzer", raw)
	return core.Settings{SecurityAnalyzer: &a}, err
}

func parseLLM(raw json.RawMessage) (core.Settings, error) {
	if !strings.HasPrefix(strings.TrimSpace(string(raw)), "{") {
		return core.Settings{}, &core.ValidationError{Field: "llm", Detail: "must be an object"}
	}
	return core.Settings{LLM: raw}, nil
}

// patchConversation is PATCH /api/conversations/{id} {"title"?, "tags"?}:
// null leaves a field as it is; tags replace all of them. An unknown
// conversation answers 200 {"success": false}, as upstream does.
func (a *restAPI) patchConversation(w http.ResponseWriter, r *http.Request, c *restCall) error {
	body, err := a.readFields(w, r)
	if err != nil {
		return err
	}
	var st core.Settings
	if raw := nonNull(body["title"]); raw != nil {
		var title string
		if json.Unmarshal(raw, &title) != nil {
			return badRequest(`"title" must be a string`)
		}
		if title, err = core.ParseTitle("title", title); err != nil {
			return controlError(err, "")
		}
		st.Title = &title
	}
	if raw := nonNull(body["tags"]); raw != nil {
		tags, err := core.ParseTags("tags", raw)
		if err != nil {
			return controlError(err, "")
		}
		st.Tags = &tags
	}
	if err := a.backend.ChangeSettings(r.Context(), c.convID, st); err != nil {
		if errors.Is(err, core.ErrNotFound) {
			writeJSON(w, http.StatusOK, struct {
				Success bool `json:"success"`
			}{false})
			return nil
		}
		return controlError(err, "Conversation not found")
	}
	writeJSON(w, http.StatusOK, success)
	return nil
}

// respondToConfirmation is POST /events/respond_to_confirmation
// {"accept": bool, "reason"?}: accepting runs (a running conversation is
// success), rejecting has the runtime reject the pending actions.
func (a *restAPI) respondToConfirmation(w http.ResponseWriter, r *http.Request, c *restCall) error {
	var req struct {
		Accept *bool   `json:"accept"`
		Reason *string `json:"reason"`
	}
	if err := a.readJSON(w, r, &req); err != nil {
		return err
	}
	if req.Accept == nil {
		return badRequest(`"accept" is required`)
	}
	reason := defaultRejectReason
	if req.Reason != nil {
		reason = *req.Reason
	}
	var err error
	if *req.Accept {
		err = a.backend.Run(r.Context(), c.convID, true)
	} else {
		err = a.backend.RejectPending(r.Context(), c.convID, reason)
	}
	if err != nil {
		return controlError(err, "Conversation not found")
	}
	writeJSON(w, http.StatusOK, success)
	return nil
}

// forwarded is an endpoint whose answer comes from the runtime: the command
// and the body fields it requires (a body is optional without any).
type forwarded struct {
	command  string
	required []string
}

// forward relays the request body to the runtime as the command's params
// and answers with the runtime's status and body.
func (a *restAPI) forward(f forwarded) restFunc {
	return func(w http.ResponseWriter, r *http.Request, c *restCall) error {
		params := json.RawMessage(`{}`)
		if len(f.required) > 0 || r.ContentLength > 0 {
			body, err := a.readFields(w, r, f.required...)
			if err != nil {
				return err
			}
			if params, err = core.EncodeJSON(body); err != nil {
				return badRequest("request body must be a JSON object")
			}
		}
		rep, err := a.backend.AskRuntime(r.Context(), c.convID, f.command, params)
		if err != nil {
			return controlError(err, "Conversation not found")
		}
		writeRaw(w, rep.Status, rep.Body)
		return nil
	}
}

// agentFinalResponse is GET /agent_final_response: the message of the last
// FinishAction, else the text of the last agent MessageEvent, else "". It
// pages back from the end of the log through the agent's events only.
func (a *restAPI) agentFinalResponse(w http.ResponseWriter, r *http.Request, c *restCall) error {
	q := core.EventQuery{Filter: core.EventFilter{Source: core.SourceAgent}, Order: core.SortTimestampDesc, Limit: core.MaxPageLimit}
	answer := ""
	for {
		page, err := a.store.SearchEvents(r.Context(), c.convID, q)
		if err != nil {
			return backendError(fmt.Errorf("search events of %s: %w", c.convID, err), "Conversation not found")
		}
		var found bool
		if answer, found = finalResponse(page.Items); found || page.NextPageID == "" {
			break
		}
		q.PageID = page.NextPageID
	}
	writeJSON(w, http.StatusOK, struct {
		Response string `json:"response"`
	}{answer})
	return nil
}

// finalResponse finds the agent's answer in events, newest first: the
// message of a FinishAction or the text of a MessageEvent.
func finalResponse(newestFirst []*core.Event) (string, bool) {
	for _, e := range newestFirst {
		if e.Source != core.SourceAgent {
			continue
		}
		body := e.Body
		if body == nil {
			body = core.BodyFromRaw(e.Raw)
		}
		switch e.Kind {
		case core.KindAction:
			var ev struct {
				Action struct {
					Kind    string `json:"kind"`
					Message string `json:"message"`
				} `json:"action"`
			}
			if json.Unmarshal(body, &ev) == nil && ev.Action.Kind == "FinishAction" {
				return ev.Action.Message, true
			}
		case core.KindMessage:
			var ev struct {
				LLM struct {
					Content []core.ContentPart `json:"content"`
				} `json:"llm_message"`
			}
			if json.Unmarshal(body, &ev) == nil {
				return core.MessageText(ev.LLM.Content), true
			}
		}
	}
	return "", false
}
