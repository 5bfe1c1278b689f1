package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/agent-server/agent-server/actors"
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

// postEvent is POST /api/conversations/{conversation_id}/events. The body
// is a user message {"role":"user","content":...,"run":false}, from anyone
// the rest chain allows, or an event object with a kind, as an agent
// runtime publishes it: only a principal with the runtime role may post one
// (403 for a client), and it must fit its model (400). With "run": true the
// agent runs after the message, as upstream's server does; a running
// conversation is no error.
func (a *restAPI) postEvent(w http.ResponseWriter, r *http.Request, c *restCall) error {
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := a.readJSON(w, r, &raw); err != nil {
		return err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return badRequest("request body must be a JSON object")
	}
	var msg *core.UserMessage
	var pub *core.Published
	if _, ok := obj["role"]; ok {
		m, err := core.ParseClientFrame(raw)
		if err != nil {
			return badRequest(frameDetail(err))
		}
		msg = m
	} else {
		if !c.principal.HasRole(core.RoleRuntime) {
			return &apiError{status: http.StatusForbidden, detail: `Forbidden: only an agent runtime may post events other than user messages; post {"role":"user","content":...}`}
		}
		p, err := core.ParsePublished(raw)
		if err != nil {
			return badRequest(err.Error())
		}
		pub = p
	}
	conv, err := a.store.Conversation(r.Context(), c.convID)
	if err != nil {
		return backendError(fmt.Errorf("read conversation %s: %w", c.convID, err), "Conversation not found")
	}
	if conv.ExecutionStatus == core.StatusDeleting {
		return &apiError{status: http.StatusConflict, detail: "Conversation is being deleted"}
	}
	if pub != nil {
		if _, err := a.backend.PublishEvent(r.Context(), c.convID, pub); err != nil {
			return controlError(fmt.Errorf("post %s to %s: %w", pub.Kind, c.convID, err), "Conversation not found")
		}
		writeJSON(w, http.StatusOK, success)
		return nil
	}
	ctx := r.Context()
	if key != "" {
		ctx = actors.WithIdempotencyKey(ctx, key)
	}
	if _, err := a.backend.PostEvent(ctx, c.convID, core.SourceUser, core.KindMessage, core.MessageBody(msg)); err != nil {
		return backendError(fmt.Errorf("post %s to %s: %w", core.KindMessage, c.convID, err), "Conversation not found")
	}
	if msg.Run {
		if err := a.backend.Run(r.Context(), c.convID, true); err != nil {
			ae := controlError(err, "Conversation not found")
			ae.detail = "The message was stored, but the agent could not run: " + ae.detail
			return ae
		}
	}
	writeJSON(w, http.StatusOK, success)
	return nil
}

// idempotencyKey reads the Idempotency-Key header: at most
// core.MaxIdempotencyKey bytes of visible ASCII, not starting with "~"
// (which the server keeps for the keys it makes itself).
func idempotencyKey(r *http.Request) (string, error) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		return "", nil
	}
	if len(key) > core.MaxIdempotencyKey || key[0] == '~' {
		return "", badRequest(fmt.Sprintf("Idempotency-Key must be 1 to %d visible ASCII characters, not starting with ~", core.MaxIdempotencyKey))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return "", badRequest(fmt.Sprintf("Idempotency-Key must be 1 to %d visible ASCII characters, not starting with ~", core.MaxIdempotencyKey))
		}
	}
	return key, nil
}
