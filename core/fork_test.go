package core

import (
	"encoding/json"
	"maps"
	"testing"
	"time"
)

// A fork keeps what configures its source and what its agent accumulated,
// and starts the rest afresh, as upstream's fork does.
func TestNewFork(t *testing.T) {
	no := false
	src := &Conversation{
		ID: "src", Agent: json.RawMessage(`{"kind":"Agent","llm":{"model":"m","api_key":"k"}}`), Workspace: json.RawMessage(`{"working_dir":"w","kind":"LocalWorkspace"}`),
		ExecutionStatus: StatusFinished, Stats: json.RawMessage(`{"usage_to_metrics":{"default":{"accumulated_cost":1}}}`), Title: "Source",
		CreatedAt: time.Unix(1, 0), UpdatedAt: time.Unix(2, 0), MaxIterations: 9, StuckDetection: &no,
		ConfirmationPolicy: json.RawMessage(`{"kind":"AlwaysConfirm"}`), SecurityAnalyzer: json.RawMessage(`{"kind":"LLMSecurityAnalyzer"}`),
		Secrets: map[string]SecretSource{"T": {Kind: SecretStatic, Value: "v"}}, Tags: map[string]string{"team": "a"},
		HookConfig: json.RawMessage(`{"x":1}`), ClientTools: json.RawMessage(`[{"name":"t"}]`), AgentState: json.RawMessage(`{"k":1}`),
		ActivatedSkills: []string{"s"}, InvokedSkills: []string{"i"}, BlockedActions: map[string]string{"a": "r"},
		BlockedMessages: map[string]string{"m": "r"}, ParentConversationID: "parent", NoAutotitle: true, Launch: json.RawMessage(`{"plugins":[]}`),
		ForkedFromConversationID: "older", Head: Head{LeafEventID: "src-head", Seq: 7},
	}
	now := time.Unix(100, 0).UTC()
	head := Head{LeafEventID: "e", Seq: 3}
	title := "Fork"

	f := NewFork(src, "fork", ForkRequest{FromEventID: "e"}, head, now)
	for _, c := range []struct {
		field string
		ok    bool
	}{
		{"id", f.ID == "fork"},
		{"agent", string(f.Agent) == string(src.Agent)},
		{"workspace", string(f.Workspace) == string(src.Workspace)},
		{"execution_status idle", f.ExecutionStatus == StatusIdle},
		{"stats reset", f.Stats == nil},
		{"no title", f.Title == ""},
		{"created and updated now", f.CreatedAt.Equal(now) && f.UpdatedAt.Equal(now)},
		{"max_iterations", f.MaxIterations == 9},
		{"stuck_detection", f.StuckDetection != nil && !*f.StuckDetection},
		{"confirmation_policy", string(f.ConfirmationPolicy) == string(src.ConfirmationPolicy)},
		{"security_analyzer", string(f.SecurityAnalyzer) == string(src.SecurityAnalyzer)},
		{"secrets", f.Secrets["T"].Value == "v"},
		{"tags not copied", f.Tags == nil},
		{"hook_config", string(f.HookConfig) == string(src.HookConfig)},
		{"client_tools", string(f.ClientTools) == string(src.ClientTools)},
		{"agent_state", string(f.AgentState) == string(src.AgentState)},
		{"activated_knowledge_skills", len(f.ActivatedSkills) == 1 && f.ActivatedSkills[0] == "s"},
		{"invoked_skills reset", f.InvokedSkills == nil},
		{"blocked_actions reset", f.BlockedActions == nil},
		{"blocked_messages reset", f.BlockedMessages == nil},
		{"parent_conversation_id", f.ParentConversationID == "parent"},
		{"autotitle", f.NoAutotitle},
		{"launch", string(f.Launch) == string(src.Launch)},
		{"forked_from_conversation_id", f.ForkedFromConversationID == "src"},
		{"forked_from_event_id", f.ForkedFromEventID == "e"},
		{"head", f.Head == head},
	} {
		if !c.ok {
			t.Errorf("fork's %s is wrong: %+v", c.field, f)
		}
	}
	// The fork shares nothing mutable with its source.
	f.Secrets["T"] = SecretSource{Kind: SecretStatic, Value: "changed"}
	f.ActivatedSkills[0] = "changed"
	if src.Secrets["T"].Value != "v" || src.ActivatedSkills[0] != "s" {
		t.Error("changing the fork changed its source")
	}

	for _, tt := range []struct {
		name      string
		req       ForkRequest
		wantTitle string
		wantTags  map[string]string
		wantStats bool
	}{
		{"title", ForkRequest{Title: &title}, "Fork", map[string]string{"title": "Fork"}, false},
		{"tags", ForkRequest{Tags: map[string]string{"env": "x"}}, "", map[string]string{"env": "x"}, false},
		{"title and tags", ForkRequest{Title: &title, Tags: map[string]string{"env": "x", "title": "old"}}, "Fork", map[string]string{"env": "x", "title": "Fork"}, false},
		{"keep metrics", ForkRequest{KeepMetrics: true}, "", nil, true},
	} {
		f := NewFork(src, "fork", tt.req, Head{}, now)
		if f.Title != tt.wantTitle || !maps.Equal(f.Tags, tt.wantTags) || (f.Stats != nil) != tt.wantStats {
			t.Errorf("%s: title %q, tags %v, stats %s; want %q, %v, copied %v", tt.name, f.Title, f.Tags, f.Stats, tt.wantTitle, tt.wantTags, tt.wantStats)
		}
		if tt.req.Tags != nil && f.Tags["title"] == "Fork" && tt.req.Tags["title"] != "old" {
			t.Errorf("%s: the request's tags were changed", tt.name)
		}
	}
}
