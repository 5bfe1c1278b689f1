package core

import (
	"bytes"
	"encoding/json"
)

// EncodeJSON encodes v as JSON the way every event is written: like
// json.Marshal, but without escaping <, > and &. json.Marshal writes each
// of them as the six bytes \u003c, so a message of HTML or code would grow
// up to six times and pass a client's frame limit (the OpenHands SDK's
// client refuses frames over 1 MiB). JSON needs no such escaping; only a
// page that inlines JSON into HTML would, and none here does.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
