package plugins

import (
	"encoding/json"
	"strings"
	"testing"
)

// The SDK takes its tracing entry out of a plugin's config, so the plugin's
// own strict decoding never sees it.
func TestTakeTracing(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		rest    string
		tracing *tracingConfig
		err     string
	}{
		{"none", `{"secret":"s"}`, `{"secret":"s"}`, nil, ""},
		{"empty", `{}`, `{}`, nil, ""},
		{"taken out", `{"secret":"s","tracing":{"endpoint":"http://127.0.0.1:4318","service_name":"auth-x"}}`, `{"secret":"s"}`,
			&tracingConfig{Endpoint: "http://127.0.0.1:4318", ServiceName: "auth-x"}, ""},
		{"a value named tracing stays", `{"note":"\"tracing\""}`, `{"note":"\"tracing\""}`, nil, ""},
		{"no endpoint", `{"tracing":{}}`, "", nil, "endpoint is required"},
		{"unknown field", `{"tracing":{"endpoint":"http://x","insecure":true}}`, "", nil, "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, tc, err := takeTracing(json.RawMessage(tt.raw))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(rest) != tt.rest {
				t.Errorf("rest = %s, want %s", rest, tt.rest)
			}
			if (tc == nil) != (tt.tracing == nil) || (tc != nil && (tc.Endpoint != tt.tracing.Endpoint || tc.ServiceName != tt.tracing.ServiceName)) {
				t.Errorf("tracing = %+v, want %+v", tc, tt.tracing)
			}
		})
	}
}
