package core

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// secretConversation holds a secret in every place a client could see it.
func secretConversation() *Conversation {
	return &Conversation{
		ID: "6f0c2f1e-8a8b-4c1e-9a53-0b7f1f9d2a11",
		Agent: json.RawMessage(`{"llm":{"model":"m","api_key":"sk-1","aws_secret_access_key":"aws-1","max_output_tokens":64000,"usage_id":"agent"},` +
			`"mcp_config":{"s":{"env":{"PLAIN":"env-1"},"headers":{"X-Api":"hdr-1"}}},"agent_context":{"skills":[{"name":"k"}],"secrets":{"S":"ctx-1"}},"kind":"Agent"}`),
		Secrets: map[string]SecretSource{
			"GITHUB_TOKEN": {Kind: SecretStatic, Value: "ghp-1", Description: "gh"},
			"LOOKUP":       {Kind: SecretLookup, URL: "https://vault", Headers: map[string]string{"Authorization": "bearer-1", "Accept": "json"}},
		},
	}
}

var secrets = []string{"sk-1", "aws-1", "env-1", "hdr-1", "ctx-1", "ghp-1", "bearer-1"}

// Every client rendering masks every secret: null over REST, "**********"
// on the socket; the runtime's rendering keeps them all.
func TestRenderingsMaskSecrets(t *testing.T) {
	c := secretConversation()
	tests := []struct {
		name    string
		render  func() any
		leak    bool     // the runtime's: every secret is there
		contain []string // fragments the rendering must hold
	}{
		{"info", func() any { return c.Info(false) }, false, []string{
			`"api_key":null`, `"aws_secret_access_key":null`, `"max_output_tokens":64000`, `"PLAIN":null`, `"skills":[]`,
			`"GITHUB_TOKEN":{"description":"gh","kind":"StaticSecret","value":null}`,
			`"LOOKUP":{"description":null,"headers":{"Accept":"json"},"kind":"LookupSecret","url":"https://vault"}`}},
		{"info with skills", func() any { return c.Info(true) }, false, []string{`"skills":[{"name":"k"}]`}},
		{"full_state", c.FullState, false, []string{
			`"api_key":"**********"`, `"PLAIN":"**********"`, `"S":"**********"`,
			`"GITHUB_TOKEN":{"description":"gh","value":"**********","kind":"StaticSecret"}`,
			`"headers":{"Accept":"json","Authorization":"**********"}`}},
		{"runtime", func() any { return c.RuntimeState() }, true, []string{`"api_key":"sk-1"`, `"value":"ghp-1"`, `"launch":{}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeJSON(tt.render())
			if err != nil {
				t.Fatal(err)
			}
			got := string(b)
			for _, s := range secrets {
				if strings.Contains(got, s) != tt.leak {
					t.Errorf("secret %q shown = %v, want %v, in %s", s, !tt.leak, tt.leak, got)
				}
			}
			for _, want := range tt.contain {
				if !strings.Contains(got, want) {
					t.Errorf("%s lacks %s", got, want)
				}
			}
		})
	}
	for _, key := range []string{StateKeyAgent, StateKeySecretRegistry} {
		v, err := c.StateValue(key)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(string(v), s) {
				t.Errorf("state update %s shows %q: %s", key, s, v)
			}
		}
	}
}

// A secret never prints: not with fmt, not in a log line.
func TestSecretNeverPrints(t *testing.T) {
	s := SecretSource{Kind: SecretStatic, Value: "ghp-1"}
	var log strings.Builder
	slog.New(slog.NewTextHandler(&log, nil)).Info("x", "secret", s.Value, "source", s)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%+v %#v", s, s), log.String()} {
		if strings.Contains(out, "ghp-1") {
			t.Errorf("a secret printed: %s", out)
		}
	}
}

// A conversation with no state fields reads as upstream's defaults.
func TestInfoDefaults(t *testing.T) {
	b, err := EncodeJSON((&Conversation{ID: "0f3c2f1e-8a8b-4c1e-9a53-0b7f1f9d2a11"}).Info(false))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"persistence_dir":"workspace/conversations/0f3c2f1e8a8b4c1e9a530b7f1f9d2a11"`, `"max_iterations":500`,
		`"stuck_detection":true`, `"execution_status":"idle"`, `"confirmation_policy":{"kind":"NeverConfirm"}`, `"security_analyzer":null`,
		`"stats":{"usage_to_metrics":{}}`, `"secret_registry":{"secret_sources":{}}`, `"agent_state":{}`, `"title":null`,
		`"tags":{}`, `"client_tools":[]`, `"available_models":[]`, `"agent":null`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("info %s lacks %s", b, want)
		}
	}
}

func TestParseSettings(t *testing.T) {
	tests := []struct {
		name  string
		parse func() (any, error)
		want  string // the result as JSON, or the error's text
	}{
		{"policy defaults", func() (any, error) { return ParseConfirmationPolicy("p", []byte(`{"kind":"ConfirmRisky"}`)) },
			`{"threshold":"HIGH","confirm_unknown":true,"kind":"ConfirmRisky"}`},
		{"policy unknown threshold", func() (any, error) {
			return ParseConfirmationPolicy("p", []byte(`{"kind":"ConfirmRisky","threshold":"UNKNOWN"}`))
		}, "p: threshold must be LOW, MEDIUM or HIGH"},
		{"policy not an object", func() (any, error) { return ParseConfirmationPolicy("p", []byte(`"NeverConfirm"`)) }, "p: must be an object"},
		{"analyzer null", func() (any, error) { return ParseSecurityAnalyzer("a", []byte(`null`)) }, `null`},
		{"analyzer unknown", func() (any, error) { return ParseSecurityAnalyzer("a", []byte(`{"kind":"X"}`)) }, "a: kind must be one of"},
		{"secret string", func() (any, error) { return ParseSecrets("s", []byte(`{"A":"v"}`)) }, `{"A":{"kind":"StaticSecret","value":"v"}}`},
		{"secret value object", func() (any, error) { return ParseSecrets("s", []byte(`{"A":{"value":"v","description":"d"}}`)) },
			`{"A":{"kind":"StaticSecret","description":"d","value":"v"}}`},
		{"secret lookup", func() (any, error) { return ParseSecrets("s", []byte(`{"A":{"kind":"LookupSecret","url":"u"}}`)) },
			`{"A":{"kind":"LookupSecret","url":"u"}}`},
		{"secret lookup without url", func() (any, error) { return ParseSecrets("s", []byte(`{"A":{"kind":"LookupSecret"}}`)) }, "s.A: a LookupSecret needs a url"},
		{"secret redacted", func() (any, error) { return ParseSecrets("s", []byte(`{"A":"**********"}`)) }, "s.A: the value is empty or redacted"},
		{"tags", func() (any, error) { return ParseTags("t", []byte(`{"a1":"x"}`)) }, `{"a1":"x"}`},
		{"tag name", func() (any, error) { return ParseTags("t", []byte(`{"A":"x"}`)) }, `t: tag name "A"`},
		{"tag value", func() (any, error) { return ParseTags("t", []byte(`{"a":"`+strings.Repeat("é", 257)+`"}`)) }, `longer than 256`},
		{"title", func() (any, error) { return ParseTitle("title", "  T  ") }, `"T"`},
		{"empty title", func() (any, error) { return ParseTitle("title", "   ") }, "title: must be 1 to 200 characters"},
		{"bare agent", func() (any, error) { return NormalizeAgent("agent", []byte(`{"llm":{"model":"m"}}`)) }, `{"kind":"Agent","llm":{"model":"m"}}`},
		{"workspace", func() (any, error) { return NormalizeWorkspace("w", []byte(`{"working_dir":"d"}`)) }, `{"kind":"LocalWorkspace","working_dir":"d"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := tt.parse()
			got := ""
			if err != nil {
				got = err.Error()
			} else {
				b, _ := EncodeJSON(v)
				got = string(b)
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// Settings and runtime state updates change the state and name the keys
// to broadcast; an unchanged value names none.
func TestApplySettings(t *testing.T) {
	c := secretConversation()
	policy := json.RawMessage(`{"kind":"AlwaysConfirm"}`)
	analyzer := json.RawMessage(`{"kind":"LLMSecurityAnalyzer"}`)
	tags := map[string]string{"a": "b"}
	title := "T"
	next, keys, err := ApplySettings(c, Settings{ConfirmationPolicy: policy, SecurityAnalyzer: &analyzer, Tags: &tags, Title: &title,
		LLM: json.RawMessage(`{"model":"other"}`), Secrets: map[string]SecretSource{"NEW": {Kind: SecretStatic, Value: "n"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys, ","); got != "confirmation_policy,security_analyzer,agent,secret_registry,tags" {
		t.Errorf("keys = %s", got)
	}
	if next.Title != "T" || len(next.Secrets) != 3 || !strings.Contains(string(next.Agent), `"llm":{"model":"other"}`) || c.Title != "" || len(c.Secrets) != 2 {
		t.Errorf("next = %+v, old = %+v: want the old one untouched", next, c)
	}
	if _, keys, _ := ApplySettings(next, Settings{ConfirmationPolicy: policy, Tags: &tags}); len(keys) != 0 {
		t.Errorf("unchanged settings named %v", keys)
	}
	running, changed, err := ApplyRuntimeState(next, StateKeyExecutionState, json.RawMessage(`"running"`))
	if err != nil || !changed || running.Status() != StatusRunning {
		t.Errorf("runtime status: %v %v %v", running.Status(), changed, err)
	}
	if _, changed, _ := ApplyRuntimeState(running, StateKeyExecutionState, json.RawMessage(`"running"`)); changed {
		t.Error("an unchanged status changed the state")
	}
	if _, _, err := ApplyRuntimeState(running, StateKeyBlockedActions, json.RawMessage(`[1]`)); err == nil {
		t.Error("a wrongly typed state value was applied")
	}
}

func TestAutoTitle(t *testing.T) {
	for in, want := range map[string]string{
		"  Flip a coin!  ":      "Flip a coin!",
		strings.Repeat("a", 50): strings.Repeat("a", 50),
		strings.Repeat("é", 51): strings.Repeat("é", 47) + "...",
	} {
		if got := AutoTitle(in); got != want {
			t.Errorf("AutoTitle(%q) = %q, want %q", in, got, want)
		}
	}
}

// The fork's origin and the event tree's HEAD show where upstream shows
// them: forked_from_* and leaf_event_id on REST, leaf_event_id and
// head_is_empty in full_state, both for the runtime.
func TestTreeFieldsRendered(t *testing.T) {
	c := &Conversation{ID: "6f0c2f1e-8a8b-4c1e-9a53-0b7f1f9d2a11", ForkedFromConversationID: "src", ForkedFromEventID: "e1",
		Head: Head{LeafEventID: "e2", Seq: 4}}
	b, _ := json.Marshal(c.Info(false))
	for _, want := range []string{`"leaf_event_id":"e2"`, `"forked_from_conversation_id":"src"`, `"forked_from_event_id":"e1"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("Info lacks %s: %s", want, b)
		}
	}
	b, _ = json.Marshal(c.FullState())
	if !strings.Contains(string(b), `"leaf_event_id":"e2","head_is_empty":false`) {
		t.Errorf("full_state = %s, want leaf_event_id and head_is_empty", b)
	}
	b, _ = json.Marshal(c.RuntimeState())
	if !strings.Contains(string(b), `"leaf_event_id":"e2"`) || !strings.Contains(string(b), `"head_is_empty":false`) {
		t.Errorf("runtime state = %s, want leaf_event_id and head_is_empty", b)
	}
	c.Head = Head{Empty: true, Seq: 5}
	b, _ = json.Marshal(c.FullState())
	if strings.Contains(string(b), `"leaf_event_id"`) || !strings.Contains(string(b), `"head_is_empty":true`) {
		t.Errorf("full_state after navigate to null = %s, want no leaf_event_id and head_is_empty true", b)
	}
	b, _ = json.Marshal(c.Info(false))
	if !strings.Contains(string(b), `"leaf_event_id":null`) || strings.Contains(string(b), "head_is_empty") {
		t.Errorf("Info after navigate to null = %s, want leaf_event_id null and no head_is_empty", b)
	}
}
