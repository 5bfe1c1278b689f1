package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"
)

// reconcile reads every event of a conversation as RemoteEventsList does:
// GET .../events/search, page after page.
func (c *sdk) reconcile(id string) []map[string]any {
	c.t.Helper()
	var items []map[string]any
	next := ""
	for {
		path := "/api/conversations/" + id + "/events/search?limit=5"
		if next != "" {
			path += "&page_id=" + next
		}
		var page struct {
			Items      []map[string]any `json:"items"`
			NextPageID *string          `json:"next_page_id"`
		}
		if err := json.Unmarshal(c.must(http.StatusOK, "GET", path, nil), &page); err != nil {
			c.t.Fatal(err)
		}
		items = append(items, page.Items...)
		if page.NextPageID == nil {
			return items
		}
		next = *page.NextPageID
	}
}

func eventIDs(evs []map[string]any) []string {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i], _ = e["id"].(string)
	}
	return ids
}

// lastTreeNode is the HEAD of a linear log: its last event that is not a
// ConversationStateUpdateEvent.
func lastTreeNode(evs []map[string]any) string {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i]["kind"] != "ConversationStateUpdateEvent" {
			return evs[i]["id"].(string)
		}
	}
	return ""
}

// TestOpenHandsForkAndNavigate is RemoteConversation.fork and navigate_to
// against agent-server with agent-echo as the runtime: the requests the
// SDK sends, answers of upstream's shapes, forks holding the source's
// events under their IDs, in order, every event's parent_id, and the
// source left as it was.
func TestOpenHandsForkAndNavigate(t *testing.T) {
	s := startServer(t, ohConfig)
	sh := loadShapes(t)
	c := &sdk{t: t, s: s, key: ohClientKey}
	rt := &sdk{t: t, s: s, key: ohRuntimeKey}
	startEcho(t, s, "-poll", "100ms")

	var created struct{ ID string }
	_ = json.Unmarshal(c.must(http.StatusCreated, "POST", "/api/conversations", fixture(t, "start_conversation.json")), &created)
	src := created.ID
	conv := "/api/conversations/" + src
	st, _ := c.attach(src)
	c.must(http.StatusOK, "POST", conv+"/events", map[string]any{"role": "user", "content": []map[string]string{{"type": "text", "text": "Flip a coin!"}}, "run": true})
	st.next("the runtime's answer", message("agent", "echo: Flip a coin!"))
	st.next("full_state after the run", fullState("finished"))
	// Stats, as a runtime reports them, so that reset_metrics shows.
	rt.must(http.StatusOK, "POST", conv+"/events", map[string]any{"kind": "ConversationStateUpdateEvent", "key": "stats",
		"value": map[string]any{"usage_to_metrics": map[string]any{"agent": map[string]any{"model_name": "m", "accumulated_cost": 0.5}}}})
	st.next("the stats update", stateKey("stats"))

	srcEvents := c.reconcile(src)
	for i, e := range srcEvents {
		sh.checkEvent(t, e)
		_, has := e["parent_id"]
		if has != (i > 0) {
			t.Errorf("event %d (%s) parent_id %v: every event but the first names its parent", i, e["kind"], e["parent_id"])
		}
	}
	srcInfo := sh.checkInfo(t, c.must(http.StatusOK, "GET", conv, nil))
	head := lastTreeNode(srcEvents)
	if srcInfo["leaf_event_id"] != head {
		t.Errorf("source leaf_event_id = %v, want the last event that is not a state update, %s", srcInfo["leaf_event_id"], head)
	}

	// fork(title=..., tags=...), as the SDK sends it, then attach to the
	// fork as the SDK's new RemoteConversation does.
	fork := sh.checkInfo(t, c.must(http.StatusCreated, "POST", conv+"/fork", map[string]any{"reset_metrics": true, "title": "Fork", "tags": map[string]string{"team": "forks"}}))
	forkID := fork["id"].(string)
	tags, _ := fork["tags"].(map[string]any)
	stats, _ := fork["stats"].(map[string]any)
	if fork["forked_from_conversation_id"] != src || fork["forked_from_event_id"] != nil || fork["title"] != "Fork" ||
		len(tags) != 2 || tags["team"] != "forks" || tags["title"] != "Fork" || fork["execution_status"] != "idle" ||
		len(stats["usage_to_metrics"].(map[string]any)) != 0 || fork["leaf_event_id"] != head {
		t.Errorf("fork = %v", fork)
	}
	sh.checkInfo(t, c.must(http.StatusOK, "GET", "/api/conversations/"+forkID, nil))
	fst, ready := c.attach(forkID)
	sh.checkEvent(t, ready)
	forkEvents := c.reconcile(forkID)
	if !slices.Equal(eventIDs(forkEvents), eventIDs(srcEvents)) {
		t.Errorf("the fork's events %v, want the source's %v: same IDs, same order", eventIDs(forkEvents), eventIDs(srcEvents))
	}
	for i := range forkEvents {
		a, _ := json.Marshal(forkEvents[i])
		b, _ := json.Marshal(srcEvents[i])
		if string(a) != string(b) {
			t.Errorf("fork event %d = %s, want the source's %s", i, a, b)
		}
	}
	// The fork runs on its own.
	c.must(http.StatusOK, "POST", "/api/conversations/"+forkID+"/events", map[string]any{"role": "user", "content": "in the fork", "run": true})
	mine := fst.next("the fork's message", message("user", "in the fork"))
	fst.next("the fork's answer", message("agent", "echo: in the fork"))
	if mine["parent_id"] != head {
		t.Errorf("the fork's first own event has parent_id %v, want the fork's HEAD %s", mine["parent_id"], head)
	}

	// fork(conversation_id=..., from_event_id=the user's message,
	// reset_metrics=False): that branch only, the metrics kept.
	userMsg := ""
	for _, e := range srcEvents {
		if e["kind"] == "MessageEvent" && e["source"] == "user" {
			userMsg = e["id"].(string)
		}
	}
	branchID := "0b8e3c52-5f0a-4a57-9c3b-8e3f1a2b3c4d"
	branch := sh.checkInfo(t, c.must(http.StatusCreated, "POST", conv+"/fork", map[string]any{"reset_metrics": false, "id": branchID, "from_event_id": userMsg}))
	bstats, _ := branch["stats"].(map[string]any)
	if branch["id"] != branchID || branch["forked_from_event_id"] != userMsg || branch["leaf_event_id"] != userMsg || branch["title"] != nil ||
		bstats["usage_to_metrics"].(map[string]any)["agent"] == nil {
		t.Errorf("branch fork = %v", branch)
	}
	var want []string
	for _, e := range srcEvents {
		want = append(want, e["id"].(string))
		if e["id"] == userMsg {
			break
		}
	}
	if got := eventIDs(c.reconcile(branchID)); !slices.Equal(got, want) {
		t.Errorf("the branch's events = %v, want the source's up to the user's message %v", got, want)
	}

	for _, tt := range []struct {
		name, path string
		body       any
		status     int
		detail     string
	}{
		{"fork into a taken id", conv + "/fork", map[string]any{"id": branchID}, http.StatusConflict, "Conversation with id " + branchID + " already exists"},
		{"fork of an unknown conversation", "/api/conversations/2da05e74-7b2c-4c79-9e5d-a0513c4d5e6f/fork", nil, http.StatusNotFound, "Source conversation not found"},
		{"fork from an unknown event", conv + "/fork", map[string]any{"from_event_id": "nope"}, http.StatusNotFound, "Unknown from_event_id: nope"},
		{"navigate to an unknown event", conv + "/navigate", map[string]any{"event_id": "nope"}, http.StatusNotFound, "Unknown event_id: nope"},
		{"navigate an unknown conversation", "/api/conversations/2da05e74-7b2c-4c79-9e5d-a0513c4d5e6f/navigate", map[string]any{"event_id": nil}, http.StatusNotFound, "Conversation not found"},
	} {
		code, b := c.call("POST", tt.path, tt.body)
		var d struct{ Detail string }
		_ = json.Unmarshal(b, &d)
		if code != tt.status || d.Detail != tt.detail {
			t.Errorf("%s: %d %s, want %d %q", tt.name, code, b, tt.status, tt.detail)
		}
	}

	// The source is as it was.
	if got := c.reconcile(src); !slices.Equal(eventIDs(got), eventIDs(srcEvents)) {
		t.Errorf("the source's events changed: %v, want %v", eventIDs(got), eventIDs(srcEvents))
	}
	after := sh.checkInfo(t, c.must(http.StatusOK, "GET", conv, nil))
	for _, k := range []string{"title", "tags", "stats", "leaf_event_id", "execution_status", "forked_from_conversation_id"} {
		a, _ := json.Marshal(after[k])
		b, _ := json.Marshal(srcInfo[k])
		if string(a) != string(b) {
			t.Errorf("the source's %s changed: %s, want %s", k, a, b)
		}
	}

	// navigate_to(the user's message), then refresh_from_server: the next
	// message branches from it; no frame tells the sockets.
	nav := sh.checkInfo(t, c.must(http.StatusOK, "POST", conv+"/navigate", map[string]any{"event_id": userMsg}))
	if nav["leaf_event_id"] != userMsg || sh.checkInfo(t, c.must(http.StatusOK, "GET", conv, nil))["leaf_event_id"] != userMsg {
		t.Errorf("after navigate_to: leaf_event_id %v, want %s", nav["leaf_event_id"], userMsg)
	}
	st.none(500*time.Millisecond, "a frame about navigate", func(map[string]any) bool { return true })
	c.must(http.StatusOK, "POST", conv+"/events", map[string]any{"role": "user", "content": "again", "run": true})
	again := st.next("the branched message", message("user", "again"))
	answer := st.next("its answer", message("agent", "echo: again"))
	if again["parent_id"] != userMsg || answer["parent_id"] != again["id"] {
		t.Errorf("after navigate_to: the message's parent %v (want %s), the answer's %v (want %v)", again["parent_id"], userMsg, answer["parent_id"], again["id"])
	}
	st.next("full_state after the run", fullState("finished"))

	// navigate_to(None): the next message is a new root.
	nav = sh.checkInfo(t, c.must(http.StatusOK, "POST", conv+"/navigate", map[string]any{"event_id": nil}))
	if nav["leaf_event_id"] != nil {
		t.Errorf("after navigate_to(None): leaf_event_id %v, want null", nav["leaf_event_id"])
	}
	c.must(http.StatusOK, "POST", conv+"/events", map[string]any{"role": "user", "content": "anew"})
	if root := st.next("the new root", message("user", "anew")); root["parent_id"] != "__root__" {
		t.Errorf("after navigate_to(None): parent_id %v, want __root__", root["parent_id"])
	}

	for _, stream := range []*stream{st, fst} {
		stream.mu.Lock()
		for _, f := range stream.all {
			sh.checkEvent(t, f)
		}
		stream.mu.Unlock()
	}
	c.noLeak(s.Log())
}
