package core

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// sample is a value of type t that passes the nested checks.
func sample(kind, field string, t jsonType) any {
	switch {
	case field == "llm_message":
		return map[string]any{"role": "assistant", "content": []any{}}
	case field == "tool_call":
		return map[string]any{"id": "c", "name": "n", "arguments": "{}", "origin": "completion"}
	case field == "key" && kind == KindStateUpdate:
		return StateKeyStats
	case field == "value" && kind == KindStateUpdate:
		return map[string]any{"usage_to_metrics": map[string]any{}}
	}
	switch t {
	case tString:
		return "s"
	case tList:
		return []any{}
	case tObject:
		return map[string]any{"kind": "K"}
	case tBool:
		return true
	case tInt:
		return 3
	}
	return "any"
}

// Every kind with its required fields (and every optional one) is accepted
// with the kind's default source; without any one required field it is
// refused, naming the field.
func TestParsePublishedEveryKind(t *testing.T) {
	for kind, spec := range kinds {
		event := map[string]any{"kind": kind}
		if spec.source == "" {
			event["source"] = "agent"
		}
		for f, ft := range spec.required {
			event[f] = sample(kind, f, ft)
		}
		for f, ft := range spec.optional {
			event[f] = sample(kind, f, ft)
		}
		b, _ := json.Marshal(event)
		p, err := ParsePublished(b)
		if err != nil {
			t.Errorf("%s with every field: %v", kind, err)
			continue
		}
		if spec.source != "" && p.Source != spec.source {
			t.Errorf("%s: source %s, want the default %s", kind, p.Source, spec.source)
		}
		for f := range spec.required {
			without := map[string]any{}
			for k, v := range event {
				if k != f {
					without[k] = v
				}
			}
			b, _ := json.Marshal(without)
			_, err := ParsePublished(b)
			var ee *EventError
			if !errors.As(err, &ee) || ee.Code != CodeInvalidEvent || !strings.Contains(ee.Detail, `"`+f+`"`) {
				t.Errorf("%s without %s: %v, want an invalid_event naming it", kind, f, err)
			}
		}
	}
	if _, err := ParsePublished([]byte(`{"kind":"ServerErrorEvent","source":"environment","code":"c","detail":"d"}`)); err == nil {
		t.Error("a runtime may not publish the server's own ServerErrorEvent")
	}
}
