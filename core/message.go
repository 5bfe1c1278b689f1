package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Error codes carried by ServerErrorEvent frames and REST error details.
const (
	CodeInvalidJSON    = "invalid_json"
	CodeInvalidMessage = "invalid_message"
	CodeInternal       = "internal_error"
	CodeRateLimited    = "rate_limited" // a frame past limits.messages_per_second, dropped
	CodeEventTooLarge  = "event_too_large"
	CodeUnavailable    = "store_unavailable" // the store could not be reached; nothing was stored
	CodeKeyReused      = "idempotency_key_reused"
)

// ErrEventTooLarge is an append refused because the sealed event would
// exceed limits.max_event_bytes; nothing was stored. The error is an
// *EventTooLargeError.
var ErrEventTooLarge = errors.New("event too large")

// EventTooLargeError says by how much an event missed the size limit.
type EventTooLargeError struct {
	Kind string // the event's kind
	Size int    // bytes of its sealed JSON
	Max  int    // limits.max_event_bytes
}

// Error says what was refused, without any of the event's content.
func (e *EventTooLargeError) Error() string {
	return fmt.Sprintf("the %s would be %d bytes, over the %d-byte limit (limits.max_event_bytes); nothing was stored", e.Kind, e.Size, e.Max)
}

// Is makes errors.Is(err, ErrEventTooLarge) hold.
func (e *EventTooLargeError) Is(target error) bool { return target == ErrEventTooLarge }

// ContentPart is one part of a message: text or images.
type ContentPart struct {
	Type      string   `json:"type"`
	Text      string   `json:"text,omitempty"`
	ImageURLs []string `json:"image_urls,omitempty"`
}

// UserMessage is a client's {"role":"user","content":...} frame.
type UserMessage struct {
	Role    string
	Content []ContentPart
	Run     bool // REST only: whether the agent should run after it
	// IdempotencyKey is a socket frame's idempotency_key: a frame sent
	// again with it (after a reconnect) is not appended twice.
	IdempotencyKey string
}

// ErrAuthFrame is returned by ParseClientFrame for {"type":"auth",...}
// frames, which are ignored once a connection is authenticated.
var ErrAuthFrame = errors.New("auth frame")

// FrameError is a client frame the server refuses; Code is its error class.
type FrameError struct {
	Code   string
	Detail string
}

// Error returns the detail.
func (e *FrameError) Error() string { return e.Detail }

// ParseClientFrame decodes a client's text frame. It returns ErrAuthFrame for
// an auth frame, a *FrameError for anything malformed, or the message.
func ParseClientFrame(data []byte) (*UserMessage, error) {
	var raw struct {
		Type    *string         `json:"type"`
		Role    *string         `json:"role"`
		Content json.RawMessage `json:"content"`
		Run     bool            `json:"run"`
		Key     string          `json:"idempotency_key"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, &FrameError{Code: CodeInvalidJSON, Detail: "frame is not a JSON object"}
	}
	if raw.Type != nil && *raw.Type == "auth" && raw.Role == nil {
		return nil, ErrAuthFrame
	}
	if raw.Role == nil {
		return nil, &FrameError{Code: CodeInvalidMessage, Detail: `"role" is required`}
	}
	if *raw.Role != "user" {
		return nil, &FrameError{Code: CodeInvalidMessage, Detail: fmt.Sprintf("role %q is not accepted; only \"user\"", *raw.Role)}
	}
	parts, err := parseContent(raw.Content)
	if err != nil {
		return nil, &FrameError{Code: CodeInvalidMessage, Detail: err.Error()}
	}
	if len(raw.Key) > MaxIdempotencyKey || strings.HasPrefix(raw.Key, "~") {
		return nil, &FrameError{Code: CodeInvalidMessage, Detail: fmt.Sprintf(`"idempotency_key" must be at most %d bytes, not starting with ~`, MaxIdempotencyKey)}
	}
	return &UserMessage{Role: "user", Content: parts, Run: raw.Run, IdempotencyKey: raw.Key}, nil
}

func parseContent(raw json.RawMessage) ([]ContentPart, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, errors.New(`"content" is required`)
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, errors.New(`"content" is not a valid string`)
		}
		return []ContentPart{{Type: "text", Text: s}}, nil
	}
	var parts []ContentPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return nil, errors.New(`"content" must be a string or a list of parts`)
	}
	for i, p := range parts {
		switch p.Type {
		case "text":
		case "image":
			if len(p.ImageURLs) == 0 {
				return nil, fmt.Errorf("content part %d: image needs image_urls", i)
			}
		default:
			return nil, fmt.Errorf("content part %d: type must be \"text\" or \"image\"", i)
		}
	}
	return parts, nil
}

// MessageBody renders a user message as a MessageEvent body.
func MessageBody(m *UserMessage) json.RawMessage {
	b, _ := EncodeJSON(struct {
		LLMMessage struct {
			Role    string        `json:"role"`
			Content []ContentPart `json:"content"`
		} `json:"llm_message"`
		ActivatedSkills []string `json:"activated_skills"`
	}{LLMMessage: struct {
		Role    string        `json:"role"`
		Content []ContentPart `json:"content"`
	}{Role: m.Role, Content: m.Content}, ActivatedSkills: []string{}})
	return b
}

// ErrorBody renders a ServerErrorEvent or ConversationErrorEvent body.
func ErrorBody(code, detail string) json.RawMessage {
	b, _ := EncodeJSON(struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}{code, detail})
	return b
}

// StateBody renders a ConversationStateUpdateEvent body.
func StateBody(key string, value any) (json.RawMessage, error) {
	return EncodeJSON(struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	}{key, value})
}
