package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Source is who produced an event.
type Source string

// The event sources of the OpenHands protocol.
const (
	SourceAgent       Source = "agent"
	SourceUser        Source = "user"
	SourceEnvironment Source = "environment"
	SourceHook        Source = "hook"
)

// Valid reports whether s is one of the known sources.
func (s Source) Valid() bool {
	switch s {
	case SourceAgent, SourceUser, SourceEnvironment, SourceHook:
		return true
	}
	return false
}

// Event kinds the server itself produces.
const (
	KindMessage            = "MessageEvent"
	KindStateUpdate        = "ConversationStateUpdateEvent"
	KindServerError        = "ServerErrorEvent"
	KindConversationError  = "ConversationErrorEvent"
	StateKeyFullState      = "full_state"
	StateKeyExecutionState = "execution_status"
)

// TimestampLayout is how event timestamps are written: ISO 8601 in UTC with
// a fixed six-digit fraction, so string order equals time order.
const TimestampLayout = "2006-01-02T15:04:05.000000Z"

// ParseTimestamp reads an ISO 8601 time as clients send it: with or without
// a zone (no zone means UTC, as Python's naive isoformat), with any fraction.
func ParseTimestamp(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("timestamp %q is not ISO 8601", s)
}

// envelopeKeys are the fields the server owns in every event.
var envelopeKeys = []string{"id", "timestamp", "source", "kind"}

// Event is one entry of a conversation's log.
//
// Body holds the kind-specific fields as a JSON object; the envelope fields
// live in the struct. Raw is the complete wire form, made once by Seal and
// then shared by every subscriber and every replay. Everything after Seal
// uses Raw, so an event read back from a store may come without Body or
// ParentID: BodyFromRaw and ParentOf read them from Raw.
type Event struct {
	ID        string
	Seq       uint64 // position in the conversation's log, from 1
	Timestamp time.Time
	Source    Source
	Kind      string
	// ParentID is the event's parent in the conversation's event tree
	// (tree.go); "" leaves parent_id out, as upstream's exclude_none does
	// for a null one.
	ParentID string
	Body     json.RawMessage
	Raw      []byte
	// IdempotencyKey is the key the post carried, if any ("" otherwise):
	// stored with the event, never on the wire. A retry with the same key
	// finds the event instead of appending another (see EventByKey).
	IdempotencyKey string
}

// MaxIdempotencyKey is the longest idempotency key accepted, in bytes.
const MaxIdempotencyKey = 255

// Seal renders Raw from the envelope and Body. Body must be a JSON object
// (or empty) and must not carry envelope keys (nor parent_id, which Seal
// writes from ParentID, before kind).
func (e *Event) Seal() error {
	body := bytes.TrimSpace(e.Body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	if body[0] != '{' || !json.Valid(body) {
		return errors.New("event body must be a JSON object")
	}
	e.seal(body)
	return nil
}

// SealTrusted is Seal for a Body the caller has just rendered as one JSON
// object itself (EncodeJSON's output, say), which it does not check again:
// the full_state frame every socket gets first is sealed this way. A Body
// that is not a JSON object makes a Raw that is not JSON.
func (e *Event) SealTrusted() {
	body := bytes.TrimSpace(e.Body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	e.seal(body)
}

// seal renders Raw from the envelope and body, a JSON object.
func (e *Event) seal(body []byte) {
	var buf bytes.Buffer
	size := len(body) + len(`{"id":,"timestamp":"","source":,"kind":,`) + len(TimestampLayout) + len(e.ID) + len(e.Source) + len(e.Kind) + 6
	if e.ParentID != "" {
		size += len(`,"parent_id":""`) + len(e.ParentID)
	}
	buf.Grow(size)
	buf.WriteString(`{"id":`)
	writeJSONString(&buf, e.ID)
	buf.WriteString(`,"timestamp":"`)
	buf.WriteString(e.Timestamp.UTC().Format(TimestampLayout))
	buf.WriteString(`","source":`)
	writeJSONString(&buf, string(e.Source))
	if e.ParentID != "" {
		buf.WriteString(`,"parent_id":`)
		writeJSONString(&buf, e.ParentID)
	}
	buf.WriteString(`,"kind":`)
	writeJSONString(&buf, e.Kind)
	rest := bytes.TrimSpace(body[1:])
	if len(rest) > 0 && rest[0] != '}' {
		buf.WriteByte(',')
	}
	buf.Write(rest)
	e.Raw = buf.Bytes()
}

// BodyOffset returns where the body's members start in a sealed event's
// Raw: just after the "kind" member, which Seal writes last in the
// envelope (after parent_id). The event's Body is "{" followed by Raw from there, which is
// how a store rebuilds Body without keeping a second copy.
func BodyOffset(raw []byte) int {
	i := bytes.Index(raw, []byte(`,"kind":"`))
	if i < 0 {
		return len(raw)
	}
	j := i + len(`,"kind":"`)
	for j < len(raw) && raw[j] != '"' {
		if raw[j] == '\\' {
			j++
		}
		j++
	}
	j++ // the closing quote
	if j < len(raw) && raw[j] == ',' {
		j++
	}
	return j
}

// BodyFromRaw rebuilds a sealed event's Body from its Raw (see BodyOffset).
func BodyFromRaw(raw []byte) json.RawMessage {
	off := min(BodyOffset(raw), len(raw))
	body := make([]byte, 1, 1+len(raw)-off)
	body[0] = '{'
	if off == len(raw) { // no members: the body was empty
		return append(body, '}')
	}
	return append(body, raw[off:]...)
}

// writeJSONString writes s as a JSON string, exactly as EncodeJSON would.
// IDs, sources and kinds need no escaping, so they skip the encoder.
func writeJSONString(buf *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b, _ := EncodeJSON(s) // a string always encodes
			buf.Write(b)
			return
		}
	}
	buf.WriteByte('"')
	buf.WriteString(s)
	buf.WriteByte('"')
}

func isEnvelopeKey(k string) bool {
	for _, e := range envelopeKeys {
		if k == e {
			return true
		}
	}
	return false
}
