package load

import (
	"bytes"
	"strconv"
	"time"
)

// epoch anchors the monotonic send timestamps carried in payloads.
var epoch = time.Now()

// clock returns nanoseconds since epoch on the monotonic clock.
func clock() int64 { return int64(time.Since(epoch)) }

// Markers of an echoed message inside a MessageEvent.
var (
	messageKind = []byte(`"kind":"MessageEvent"`)
	textMarker  = []byte("bench:")
)

// minText is the shortest text appendMessage writes: the marker, two
// 20-digit numbers and their separators.
const minText = len("bench:") + 20 + 1 + 20 + 1

// appendMessage appends the client frame {"role":"user","content":"<text>"}
// whose text is "bench:<seq>:<sent>:" padded with 'x' to size bytes.
func appendMessage(dst []byte, seq uint64, sent int64, size int) []byte {
	dst = append(dst, `{"role":"user","content":"`...)
	start := len(dst)
	dst = append(dst, textMarker...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, sent, 10)
	dst = append(dst, ':')
	for len(dst)-start < size {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

// parseEcho finds the sequence number and send time in a MessageEvent
// carrying a message made by appendMessage.
func parseEcho(frame []byte) (seq uint64, sent int64, ok bool) {
	i := bytes.Index(frame, textMarker)
	if i < 0 || !bytes.Contains(frame, messageKind) {
		return 0, 0, false
	}
	rest := frame[i+len(textMarker):]
	seq, rest, ok = leadingUint(rest)
	if !ok {
		return 0, 0, false
	}
	u, _, ok := leadingUint(rest)
	return seq, int64(u), ok
}

// leadingUint parses the digits before the first ':' of b and returns what
// follows it.
func leadingUint(b []byte) (uint64, []byte, bool) {
	var n uint64
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9' && i < 20:
			n = n*10 + uint64(c-'0')
		case c == ':' && i > 0:
			return n, b[i+1:], true
		default:
			return 0, nil, false
		}
	}
	return 0, nil, false
}
