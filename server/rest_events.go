package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/agent-server/agent-server/core"
)

// eventFilter reads kind, source, timestamp__gte and timestamp__lt.
func eventFilter(c *restCall) (core.EventFilter, error) {
	f := core.EventFilter{Kind: c.queryValue("kind")}
	if s := c.queryValue("source"); s != "" {
		f.Source = core.Source(s)
		if !f.Source.Valid() {
			return f, badRequest("source must be one of agent, user, environment, hook")
		}
	}
	if s := c.queryValue("timestamp__gte"); s != "" {
		t, err := core.ParseTimestamp(s)
		if err != nil {
			return f, badRequest("timestamp__gte is not an ISO 8601 timestamp")
		}
		f.Since = t
	}
	if s := c.queryValue("timestamp__lt"); s != "" {
		t, err := core.ParseTimestamp(s)
		if err != nil {
			return f, badRequest("timestamp__lt is not an ISO 8601 timestamp")
		}
		f.Before = t
	}
	return f, nil
}

// searchEvents is GET /api/conversations/{conversation_id}/events/search,
// answered from the store's indexes. Items are each event's stored wire
// form, written as is.
func (a *restAPI) searchEvents(w http.ResponseWriter, r *http.Request, c *restCall) error {
	f, err := eventFilter(c)
	if err != nil {
		return err
	}
	order, err := core.ParseEventOrder(c.queryValue("sort_order"))
	if err != nil {
		return badRequest(err.Error())
	}
	limit, err := core.ParseLimit(c.queryValue("limit"))
	if err != nil {
		return badRequest(err.Error())
	}
	page, err := a.store.SearchEvents(r.Context(), c.convID, core.EventQuery{Filter: f, Order: order, PageID: c.queryValue("page_id"), Limit: limit})
	if errors.Is(err, core.ErrUnknownPageID) {
		return badRequest("page_id does not name an event of this conversation")
	}
	if err != nil {
		return backendError(fmt.Errorf("search events of %s: %w", c.convID, err), "Conversation not found")
	}
	writeEventPage(w, page)
	return nil
}

// writeEventPage writes {"items":[...],"next_page_id":...} from the events'
// Raw bytes, without marshaling them again.
func writeEventPage(w http.ResponseWriter, page core.Page[*core.Event]) {
	size := 64
	for _, e := range page.Items {
		size += len(e.Raw) + 1
	}
	var buf bytes.Buffer
	buf.Grow(size)
	buf.WriteString(`{"items":[`)
	for i, e := range page.Items {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(eventRaw(e))
	}
	buf.WriteString(`],"next_page_id":`)
	if page.NextPageID == "" {
		buf.WriteString("null")
	} else {
		id, _ := json.Marshal(page.NextPageID) // a string always marshals
		buf.Write(id)
	}
	buf.WriteByte('}')
	writeRaw(w, http.StatusOK, buf.Bytes())
}

// eventRaw returns e's wire form, sealing a copy if the store handed back an
// event without one.
func eventRaw(e *core.Event) []byte {
	if len(e.Raw) > 0 {
		return e.Raw
	}
	cp := *e
	if err := cp.Seal(); err != nil {
		return []byte("null")
	}
	return cp.Raw
}

// writeRaw writes already-serialized JSON with status.
func writeRaw(w http.ResponseWriter, status int, data []byte) {
	setJSONHeaders(w)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// countEvents is GET /api/conversations/{conversation_id}/events/count.
func (a *restAPI) countEvents(w http.ResponseWriter, r *http.Request, c *restCall) error {
	f, err := eventFilter(c)
	if err != nil {
		return err
	}
	n, err := a.store.CountEvents(r.Context(), c.convID, f)
	if err != nil {
		return backendError(fmt.Errorf("count events of %s: %w", c.convID, err), "Conversation not found")
	}
	writeJSON(w, http.StatusOK, n)
	return nil
}

// getEvent is GET /api/conversations/{conversation_id}/events/{event_id}.
func (a *restAPI) getEvent(w http.ResponseWriter, r *http.Request, c *restCall) error {
	eventID := r.PathValue(paramEvent)
	e, err := a.store.EventByID(r.Context(), c.convID, eventID)
	if errors.Is(err, core.ErrNotFound) {
		if _, cerr := a.store.Conversation(r.Context(), c.convID); errors.Is(cerr, core.ErrNotFound) {
			return notFound("Conversation not found")
		}
		return notFound("Event not found")
	}
	if err != nil {
		return backendError(fmt.Errorf("read event of %s: %w", c.convID, err), "Event not found")
	}
	writeRaw(w, http.StatusOK, eventRaw(e))
	return nil
}

// postEvent is POST /api/conversations/{conversation_id}/events. The body is
// a user message {"role":"user","content":...,"run":false}, or a full event
// object with source "agent" or "environment" and a kind, as an agent
// runtime posts it. Either is appended and broadcast by the backend.
func (a *restAPI) postEvent(w http.ResponseWriter, r *http.Request, c *restCall) error {
	var raw json.RawMessage
	if err := a.readJSON(w, r, &raw); err != nil {
		return err
	}
	source, kind, body, err := splitPostedEvent(raw)
	if err != nil {
		return err
	}
	conv, err := a.store.Conversation(r.Context(), c.convID)
	if err != nil {
		return backendError(fmt.Errorf("read conversation %s: %w", c.convID, err), "Conversation not found")
	}
	if conv.ExecutionStatus == core.StatusDeleting {
		return &apiError{status: http.StatusConflict, detail: "Conversation is being deleted"}
	}
	if _, err := a.backend.PostEvent(r.Context(), c.convID, source, kind, body); err != nil {
		return backendError(fmt.Errorf("post %s to %s: %w", kind, c.convID, err), "Conversation not found")
	}
	writeJSON(w, http.StatusOK, success)
	return nil
}

// splitPostedEvent turns a posted body into the event to append.
func splitPostedEvent(raw json.RawMessage) (core.Source, string, json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return "", "", nil, badRequest("request body must be a JSON object")
	}
	if _, ok := obj["role"]; ok {
		msg, err := core.ParseClientFrame(raw)
		if err != nil {
			return "", "", nil, badRequest(frameDetail(err))
		}
		return core.SourceUser, core.KindMessage, core.MessageBody(msg), nil
	}
	_, hasSource := obj["source"]
	_, hasKind := obj["kind"]
	if !hasSource && !hasKind {
		return "", "", nil, badRequest(`body must be {"role":"user","content":...} or an event object with "source" and "kind"`)
	}
	source, kind, body, err := core.SplitEnvelope(obj)
	if err != nil {
		return "", "", nil, badRequest(err.Error())
	}
	if source != core.SourceAgent && source != core.SourceEnvironment {
		return "", "", nil, badRequest(`an event object's "source" must be "agent" or "environment"; post user messages as {"role":"user","content":...}`)
	}
	return source, kind, body, nil
}
