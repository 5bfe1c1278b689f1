package core

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
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
		if back != replaceInvalid(s) {
			t.Fatalf("writeJSONString(%q) decodes to %q", s, back)
		}
	})
}

// replaceInvalid is s with each byte that is not part of valid UTF-8
// replaced by U+FFFD, as encoding/json writes it (strings.ToValidUTF8
// replaces a whole run with one, which "\xf1\xe0" found).
func replaceInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
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
		{"published event", func() ([]byte, error) {
			p, err := ParsePublished([]byte(`{"source":"agent","kind":"MessageEvent","llm_message":{"role":"assistant","content":[{"type":"text","text":"` + text + `"}]}}`))
			if err != nil {
				return nil, err
			}
			return p.Body, nil
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

// BodyFromRaw gives back a body that seals to the same bytes.
func TestBodyFromRaw(t *testing.T) {
	for _, body := range []string{``, `{}`, `{"a":1}`, `{"kind_of":"x","nested":{"kind":"y"}}`, `{"t":"\",\"kind\":\""}`} {
		e := &Event{ID: "i", Source: SourceAgent, Kind: `Odd"KindEvent`, Body: []byte(body)}
		if err := e.Seal(); err != nil {
			t.Fatal(err)
		}
		again := &Event{ID: e.ID, Source: e.Source, Kind: e.Kind, Body: BodyFromRaw(e.Raw)}
		if err := again.Seal(); err != nil || !bytes.Equal(again.Raw, e.Raw) {
			t.Errorf("body %s: BodyFromRaw gave %s, which seals to %s, not %s (%v)", body, again.Body, again.Raw, e.Raw, err)
		}
	}
}

// BenchmarkSeal seals a 200-byte message without and with a parent_id,
// what the conversation actor does once per event.
func BenchmarkSeal(b *testing.B) {
	body := MessageBody(&UserMessage{Role: "user", Content: []ContentPart{{Type: "text", Text: strings.Repeat("m", 200)}}})
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, parent := range []string{"", NewEventID()} {
		b.Run(fmt.Sprintf("parent=%t", parent != ""), func(b *testing.B) {
			for b.Loop() {
				e := &Event{ID: "019a2b3c-0000-7000-8000-000000000000", Timestamp: ts, Source: SourceUser, Kind: KindMessage, ParentID: parent, Body: body}
				if err := e.Seal(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// SealTrusted renders exactly what Seal does for a body Seal accepts.
func TestSealTrusted(t *testing.T) {
	ts := time.Date(2026, 11, 30, 1, 2, 3, 4000, time.UTC)
	for _, body := range []string{``, `{}`, ` {"key":"full_state","value":{"a":1}} `, `{"code":"x","detail":"é \"q\""}`} {
		sealed := &Event{ID: "id-1", Timestamp: ts, Source: SourceEnvironment, Kind: KindStateUpdate, Body: []byte(body)}
		if err := sealed.Seal(); err != nil {
			t.Fatalf("Seal(%s): %v", body, err)
		}
		trusted := &Event{ID: "id-1", Timestamp: ts, Source: SourceEnvironment, Kind: KindStateUpdate, Body: []byte(body)}
		trusted.SealTrusted()
		if !bytes.Equal(trusted.Raw, sealed.Raw) {
			t.Errorf("body %s: SealTrusted = %s, Seal = %s", body, trusted.Raw, sealed.Raw)
		}
	}
}
