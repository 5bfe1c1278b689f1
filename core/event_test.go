package core

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzWriteJSONString checks the encoder's fast path against EncodeJSON,
// whose output every sealed event must match byte for byte, and that the
// result decodes back to s (for valid UTF-8).
func FuzzWriteJSONString(f *testing.F) {
	for _, s := range []string{
		"", "019a2b3c-0000-7000-8000-000000000000", "environment", "ConversationStateUpdateEvent",
		`a"b`, `a\b`, "<script>", "a&b", "tab\there", "nul\x00", "del\x7f", "é", "\u2028", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := EncodeJSON(s)
		var got bytes.Buffer
		writeJSONString(&got, s)
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("writeJSONString(%q) = %s, want %s", s, got.Bytes(), want)
		}
		var back string
		if err := json.Unmarshal(got.Bytes(), &back); err != nil {
			t.Fatalf("writeJSONString(%q) = %s, which does not decode: %v", s, got.Bytes(), err)
		}
		// Invalid UTF-8 decodes to one U+FFFD per bad byte, which
		// strings.ToValidUTF8 (one per run) does not model: compare valid
		// input only.
		if utf8.ValidString(s) && back != s {
			t.Fatalf("writeJSONString(%q) decodes to %q", s, back)
		}
	})
}

// Events are written without HTML escaping: a '<' is one byte on the wire,
// not the six of \u003c, in every body the server renders.
func TestEventsAreNotHTMLEscaped(t *testing.T) {
	const text = "<a href='x'>&</a>"
	bodies := []struct {
		name string
		body func() ([]byte, error)
	}{
		{"message", func() ([]byte, error) {
			return MessageBody(&UserMessage{Role: "user", Content: []ContentPart{{Type: "text", Text: text}}}), nil
		}},
		{"error", func() ([]byte, error) { return ErrorBody("c", text), nil }},
		{"state", func() ([]byte, error) { return StateBody("title", text) }},
		{"posted event", func() ([]byte, error) {
			_, _, b, err := SplitEnvelope(map[string]json.RawMessage{"source": []byte(`"agent"`), "kind": []byte(`"ActionEvent"`), "thought": []byte(`"` + text + `"`)})
			return b, err
		}},
	}
	for _, tt := range bodies {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.body()
			if err != nil {
				t.Fatal(err)
			}
			e := &Event{ID: "i", Source: SourceAgent, Kind: "K" + text + "Event", Body: b}
			if err := e.Seal(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(e.Raw, []byte(text)) || bytes.Contains(e.Raw, []byte(`\u003c`)) {
				t.Errorf("sealed event %s holds an escaped form of %q", e.Raw, text)
			}
		})
	}
}
