package core

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzWriteJSONString checks the encoder's fast path against json.Marshal,
// whose output every sealed event must match byte for byte.
func FuzzWriteJSONString(f *testing.F) {
	for _, s := range []string{
		"", "019a2b3c-0000-7000-8000-000000000000", "environment", "ConversationStateUpdateEvent",
		`a"b`, `a\b`, "<script>", "a&b", "tab\there", "nul\x00", "del\x7f", "é", "\u2028", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		var got bytes.Buffer
		writeJSONString(&got, s)
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("writeJSONString(%q) = %s, want %s", s, got.Bytes(), want)
		}
	})
}
