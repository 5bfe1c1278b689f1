package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

// treeLog pages through a conversation's log on n: each event's ID and
// parent_id.
func treeLog(t *testing.T, n *node, id string) (ids, parents []string) {
	t.Helper()
	code, body := n.request("GET", "/api/conversations/"+id+"/events/search?limit=100", nil)
	var p struct {
		Items []struct {
			ID       string `json:"id"`
			ParentID string `json:"parent_id"`
		} `json:"items"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &p) != nil {
		t.Fatalf("events/search on %s: %d %s", n.name, code, body)
	}
	for _, e := range p.Items {
		ids, parents = append(ids, e.ID), append(parents, e.ParentID)
	}
	return ids, parents
}

// navigate and fork through a node that does not own the conversation:
// navigate crosses to the owner, whose next event branches there; a fork
// is made by the node asked, in the shared database, and its own events
// then go to whichever node owns it.
func TestForkAndNavigateThroughNonOwner(t *testing.T) {
	c := newCluster(t, 2, "")
	id := c.nodes[0].createConversation()
	conv := "/api/conversations/" + id
	for i := range 3 {
		if !post(func() *node { return c.nodes[0] }, id, fmt.Sprint("m", i), fmt.Sprint("k", i), 10*time.Second) {
			t.Fatalf("post %d not acknowledged", i)
		}
	}
	var owner, other *node
	waitFor(t, "an owner", 10*time.Second, func() bool {
		for n, k := range owned(c) {
			if k == 1 {
				owner = n
			}
		}
		return owner != nil
	})
	for _, n := range c.nodes {
		if n != owner {
			other = n
		}
	}
	ids, _ := treeLog(t, other, id)
	if len(ids) != 3 {
		t.Fatalf("the log holds %d events, want 3", len(ids))
	}

	code, body := other.request("POST", conv+"/navigate", map[string]any{"event_id": ids[0]})
	var info struct {
		ID                       string  `json:"id"`
		LeafEventID              *string `json:"leaf_event_id"`
		ForkedFromConversationID *string `json:"forked_from_conversation_id"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &info) != nil || info.LeafEventID == nil || *info.LeafEventID != ids[0] {
		t.Fatalf("navigate through %s (not the owner): %d %s", other.name, code, body)
	}
	if !post(func() *node { return other }, id, "branched", "k-branched", 10*time.Second) {
		t.Fatal("post after navigate not acknowledged")
	}
	ids, parents := treeLog(t, owner, id)
	if len(ids) != 4 || parents[3] != ids[0] {
		t.Errorf("after navigate: parents %v, want the fourth event a child of the first, %s", parents, ids[0])
	}

	code, body = other.request("POST", conv+"/fork", map[string]any{"reset_metrics": true})
	if code != http.StatusCreated || json.Unmarshal(body, &info) != nil || info.ForkedFromConversationID == nil || *info.ForkedFromConversationID != id ||
		info.LeafEventID == nil || *info.LeafEventID != ids[3] {
		t.Fatalf("fork through %s: %d %s", other.name, code, body)
	}
	fork := info.ID
	forkIDs, _ := treeLog(t, owner, fork)
	if !slices.Equal(forkIDs, ids) {
		t.Errorf("the fork's events %v, want the source's %v", forkIDs, ids)
	}
	for _, n := range c.nodes {
		if !post(func() *node { return n }, fork, "in the fork via "+n.name, "k-fork-"+n.name, 10*time.Second) {
			t.Fatalf("post to the fork through %s not acknowledged", n.name)
		}
	}
	forkIDs, parents = treeLog(t, other, fork)
	if len(forkIDs) != 6 || parents[4] != ids[3] || parents[5] != forkIDs[4] {
		t.Errorf("the fork's own events: %d events, parents %v; want 6, the fifth a child of %s", len(forkIDs), parents, ids[3])
	}
	if code, body := other.request("POST", conv+"/fork", map[string]any{"id": fork}); code != http.StatusConflict {
		t.Errorf("fork into a taken id through %s: %d %s, want 409", other.name, code, body)
	}
	if ids2, _ := treeLog(t, other, id); !slices.Equal(ids2, ids) {
		t.Errorf("the source's log changed: %v, want %v", ids2, ids)
	}
}
