package jwttoken

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// segmentBuf is the size of the stack buffer a segment is decoded into; a
// longer segment (a large identity provider token) is decoded onto the heap.
const segmentBuf = 1024

// decodeSegment decodes a base64url segment without padding into buf, or
// onto the heap when buf is too small.
func decodeSegment(buf []byte, seg string) ([]byte, bool) {
	if base64.RawURLEncoding.DecodedLen(len(seg)) > len(buf) {
		b, err := base64.RawURLEncoding.DecodeString(seg)
		return b, err == nil
	}
	n, err := base64.RawURLEncoding.Decode(buf, []byte(seg))
	return buf[:n], err == nil
}

// header reads a JOSE header as encoding/json fills struct{ Alg, Kid any }:
// ok is false unless b is a JSON object whose alg is a non-empty string
// and no alg or kid member holds a number out of float64's range (which
// fails that decode); kid is "" unless a string.
func header(b []byte) (alg, kid string, ok bool) {
	if !json.Valid(b) {
		return "", "", false
	}
	i, ok := object(b)
	if !ok {
		return "", "", false
	}
	var name, value, algVal, kidVal []byte
	for {
		if name, value, i, ok = member(b, i); !ok {
			break
		}
		switch {
		case nameFolds(name, "ALG"):
			algVal = value
		case nameFolds(name, "KID"):
			kidVal = value
		default:
			continue
		}
		if overflows(value) {
			return "", "", false
		}
	}
	alg, ok = algValue(algVal)
	if !ok || alg == "" {
		return "", "", false
	}
	kid, _ = stringValue(kidVal)
	return alg, kid, true
}

// issuer reads a JWT payload as encoding/json fills a
// map[string]json.RawMessage and then iss from it: ok is false unless b is
// a JSON object; iss is "" unless a string.
func issuer(b []byte) (iss string, ok bool) {
	if !json.Valid(b) {
		return "", false
	}
	i, ok := object(b)
	if !ok {
		return "", false
	}
	var name, value, issVal []byte
	for {
		if name, value, i, ok = member(b, i); !ok {
			break
		}
		if nameIs(name, "iss") {
			issVal = value
		}
	}
	iss, _ = stringValue(issVal)
	return iss, true
}

// object returns the index after the '{' that opens the valid JSON b, ok
// false when b is not an object.
func object(b []byte) (int, bool) {
	i := skipSpace(b, 0)
	return i + 1, i < len(b) && b[i] == '{'
}

// member reads the member of the valid JSON object b that starts at or
// after i (after its '{' or the previous member): its quoted name, its raw
// value and the index after it. ok is false at the object's end.
func member(b []byte, i int) (name, value []byte, next int, ok bool) {
	i = skipSpace(b, i)
	if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		return nil, nil, i, false // '}'
	}
	start := i
	i = skipString(b, i)
	name = b[start:i]
	if i = skipSpace(b, i); i >= len(b) || b[i] != ':' {
		return nil, nil, i, false
	}
	start = skipSpace(b, i+1)
	i = skipValue(b, start)
	return name, b[start:i], i, true
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at b[i]
// (never past len(b), though b, being valid, closes every string).
func skipString(b []byte, i int) int {
	for i++; i < len(b) && b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++ // the escaped byte; \uXXXX's hex digits are plain bytes
		}
	}
	return min(i+1, len(b))
}

// skipValue returns the index after the value that starts at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++ // a number, true, false or null
	}
	return i
}

// overflows reports whether the valid JSON value v holds a number out of
// float64's range, which fails encoding/json's decode of v into an any.
func overflows(v []byte) bool {
	for i := 0; i < len(v); {
		switch c := v[i]; {
		case c == '"':
			i = skipString(v, i)
		case c == '-' || '0' <= c && c <= '9':
			j := i + 1
			for j < len(v) && (v[j] >= '0' && v[j] <= '9' || v[j] == '.' || v[j] == 'e' || v[j] == 'E' || v[j] == '+' || v[j] == '-') {
				j++
			}
			if _, err := strconv.ParseFloat(string(v[i:j]), 64); err != nil {
				return true
			}
			i = j
		default:
			i++
		}
	}
	return false
}

// plainString returns the contents of the quoted JSON string q when they
// need no unquoting: no escape and only ASCII (encoding/json replaces
// invalid UTF-8).
func plainString(q []byte) ([]byte, bool) {
	s := q[1 : len(q)-1]
	for _, c := range s {
		if c == '\\' || c >= utf8.RuneSelf {
			return nil, false
		}
	}
	return s, true
}

// unquote returns the JSON string q as encoding/json decodes it.
func unquote(q []byte) string {
	if s, ok := plainString(q); ok {
		return string(s)
	}
	var s string
	// A copy, so that q (a segment's buffer on the stack) stays there.
	_ = json.Unmarshal(bytes.Clone(q), &s) // q is a valid JSON string
	return s
}

// jwsAlgs are the registered JWS algorithm names (RFC 7518, RFC 8037).
var jwsAlgs = [...]string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA", "none"}

// algValue is stringValue without an allocation for a registered JWS
// algorithm name.
func algValue(v []byte) (string, bool) {
	if len(v) >= 2 && v[0] == '"' {
		if s, ok := plainString(v); ok {
			for _, name := range jwsAlgs {
				if string(s) == name {
					return name, true
				}
			}
		}
	}
	return stringValue(v)
}

// stringValue returns the JSON value v as a string, ok false when it is
// not a string (or nil: absent).
func stringValue(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	return unquote(v), true
}

// nameIs reports whether the quoted member name q decodes to name.
func nameIs(q []byte, name string) bool {
	if s, ok := plainString(q); ok {
		return string(s) == name
	}
	s, k := q[1:len(q)-1], 0
	for i := 0; i < len(s); k++ {
		var r rune
		r, i = nextRune(s, i)
		if k >= len(name) || r != rune(name[k]) {
			return false
		}
	}
	return k == len(name)
}

// nameFolds reports whether the quoted member name q decodes to a name that
// encoding/json matches to a struct field named upper (upper-case ASCII):
// equal under Unicode simple case folding. It walks the name in place: a
// header of many escaped or non-ASCII names costs no decoding.
func nameFolds(q []byte, upper string) bool {
	s, k := q[1:len(q)-1], 0
	for i := 0; i < len(s); k++ {
		var r rune
		r, i = nextRune(s, i)
		if r >= utf8.RuneSelf {
			r = foldRune(r)
		} else if 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		if k >= len(upper) || r != rune(upper[k]) {
			return false
		}
	}
	return k == len(upper)
}

// nextRune returns the rune at s[i] of a valid JSON string's contents and
// where the next one starts. A two-character escape (\n, \/, ...) and a
// \u escape of a surrogate give -1: they decode to no letter, and no rune
// outside the Basic Multilingual Plane folds to one, so neither can match
// a name made of letters. Invalid UTF-8 gives utf8.RuneError, as
// encoding/json decodes it.
func nextRune(s []byte, i int) (rune, int) {
	switch c := s[i]; {
	case c == '\\':
		if s[i+1] != 'u' {
			return -1, i + 2
		}
		var r rune
		for _, h := range s[i+2 : i+6] {
			switch {
			case '0' <= h && h <= '9':
				h -= '0'
			case 'a' <= h && h <= 'f':
				h -= 'a' - 10
			default:
				h -= 'A' - 10
			}
			r = r<<4 | rune(h)
		}
		if utf16.IsSurrogate(r) {
			return -1, i + 6
		}
		return r, i + 6
	case c < utf8.RuneSelf:
		return rune(c), i + 1
	}
	r, n := utf8.DecodeRune(s[i:])
	return r, i + n
}

// foldRune returns the smallest rune of r's case-folding orbit, as
// encoding/json folds a non-ASCII rune of a name.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}
