package jwttoken

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"strings"
	"sync"
)

// HS256 verifies HS256 tokens of the shape issuers sign, without
// golang-jwt: one pass over each segment, a pooled keyed HMAC and no
// reflection. Inside a plugin process, whose caches the server's work
// keeps cold, golang-jwt's generic decode costs several times what the
// check itself does.
//
// Verify never decides against a token. It reports ok only for a token
// whose signature is valid under the secret and whose header and payload
// it reads exactly as golang-jwt, and encoding/json under it, would read
// them into the jwt plugin's claims, and which Inspect reads as a JWT
// with alg HS256 and the same issuer (so a caller need not inspect it
// too). Anything else (a bad signature, an alg other than HS256, a claim
// of an unexpected type, a name that only matches a claim's
// case-insensitively, a claim given twice, escapes in names, a time that
// is not a whole number of seconds) is left to golang-jwt, which decides,
// and says why. FuzzHS256 checks the claims against golang-jwt's.
type HS256 struct {
	scratch sync.Pool // *hs256Scratch
}

// hs256Scratch is one Verify's working memory, pooled: a keyed HMAC, and
// the buffers a string must be copied into to reach it or base64.
type hs256Scratch struct {
	mac  hash.Hash
	text []byte // the signing input, header.payload
	seg  []byte // a decoded segment
	sig  [sha256.Size]byte
	sum  [sha256.Size]byte
}

// sigLen is the length of an HS256 signature's segment: 32 bytes in
// base64url without padding.
const sigLen = 43

// NewHS256 returns a verifier for tokens signed with secret.
func NewHS256(secret []byte) *HS256 {
	key := bytes.Clone(secret)
	v := &HS256{}
	v.scratch.New = func() any { return &hs256Scratch{mac: hmac.New(sha256.New, key)} }
	return v
}

// Claims are what Verify reads from a payload: golang-jwt's registered
// claims, with times in whole seconds, and the jwt plugin's conversations
// and roles. Strings, Conversations and Roles are as encoding/json fills
// them (an empty list is an empty slice, not nil); Audience has the same
// members as golang-jwt's, but is an empty slice where golang-jwt's is nil.
type Claims struct {
	Issuer, Subject, ID string
	Audience            []string // aud: one string or a list
	Expiry              int64    // exp, which Verify requires
	NotBefore           int64    // nbf when HasNotBefore
	HasNotBefore        bool
	Conversations       []string
	Roles               []string
}

// The claims read, by index into claimNames.
const (
	claimIss = iota
	claimSub
	claimAud
	claimExp
	claimNbf
	claimIat
	claimJti
	claimConversations
	claimRoles
	claimCount
)

// claimNames are the claims' names, as the jwt plugin's Claims declare
// them (golang-jwt's RegisteredClaims, conversations and roles).
var claimNames = [claimCount]string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "conversations", "roles"}

// Two answers of claimIndex that are not a claim's index.
const (
	notClaim   = -1 // no claim: encoding/json skips it
	foldsClaim = -2 // a claim's name in other case: encoding/json would fill that claim
)

// Verify fills c from tok and reports true when tok is an HS256 token of
// the common shape, signed with the secret (see HS256); c means nothing
// when it reports false. It checks no claim's value: the caller checks
// times, issuer and audience.
func (v *HS256) Verify(tok string, c *Claims) bool {
	if len(tok) > maxLen {
		return false
	}
	dot1 := strings.IndexByte(tok, '.')
	if dot1 < 0 {
		return false
	}
	dot2 := strings.IndexByte(tok[dot1+1:], '.')
	if dot2 < 0 {
		return false
	}
	dot2 += dot1 + 1
	if len(tok)-dot2-1 != sigLen {
		return false // golang-jwt also skips newlines: it decides those
	}
	s := v.scratch.Get().(*hs256Scratch)
	defer v.scratch.Put(s)
	s.text = append(s.text[:0], tok...)
	if n, err := base64.RawURLEncoding.Decode(s.sig[:], s.text[dot2+1:]); err != nil || n != sha256.Size {
		return false
	}
	s.mac.Reset()
	s.mac.Write(s.text[:dot2])
	if !hmac.Equal(s.mac.Sum(s.sum[:0]), s.sig[:]) {
		return false
	}
	b, ok := s.decode(s.text[:dot1])
	if !ok || !hs256Header(b) {
		return false
	}
	if b, ok = s.decode(s.text[dot1+1 : dot2]); !ok {
		return false
	}
	*c = Claims{}
	return c.read(b)
}

// decode decodes a base64url segment without padding into s.seg.
func (s *hs256Scratch) decode(seg []byte) ([]byte, bool) {
	n := base64.RawURLEncoding.DecodedLen(len(seg))
	if cap(s.seg) < n {
		s.seg = make([]byte, n)
	}
	n, err := base64.RawURLEncoding.Decode(s.seg[:n], seg)
	return s.seg[:n], err == nil
}

// hs256Header reports whether b is a header golang-jwt reads as alg HS256:
// a JSON object with exactly one member named alg, "HS256", no escaped or
// non-ASCII name (one could decode to alg) and no number out of float64's
// range (which fails golang-jwt's decode into a map). A name that is alg
// in other case is refused too: Inspect would read its value as the alg.
func hs256Header(b []byte) bool {
	algs := 0
	return plainMembers(b, func(name, value []byte) bool {
		if len(name) != len("alg") || !strings.EqualFold(string(name), "alg") {
			return true
		}
		algs++
		return string(name) == "alg" && string(value) == `"HS256"`
	}) && algs == 1 && !overflows(b)
}

// read fills c from the payload b, reporting false unless b is a JSON
// object whose claims encoding/json would decode into the jwt plugin's
// claims exactly as read here.
func (c *Claims) read(b []byte) bool {
	var seen [claimCount]bool
	return plainMembers(b, func(name, value []byte) bool {
		k := claimIndex(name)
		if k == notClaim {
			return true
		}
		if k == foldsClaim || seen[k] {
			return false // the last would win: left to golang-jwt
		}
		seen[k] = true
		ok := false
		switch k {
		case claimIss:
			c.Issuer, ok = stringValue(value)
		case claimSub:
			c.Subject, ok = stringValue(value)
		case claimJti:
			c.ID, ok = stringValue(value)
		case claimAud:
			if c.Audience, ok = stringList(value); !ok {
				var one string
				one, ok = stringValue(value)
				c.Audience = []string{one}
			}
		case claimExp:
			c.Expiry, ok = seconds(value)
		case claimNbf:
			c.NotBefore, ok = seconds(value)
			c.HasNotBefore = ok
		case claimIat:
			_, ok = seconds(value) // golang-jwt decodes it, and checks nothing
		case claimConversations:
			c.Conversations, ok = stringList(value)
		case claimRoles:
			c.Roles, ok = stringList(value)
		}
		return ok
	}) && seen[claimExp]
}

// plainMembers calls each with every member of b, name unquoted, and
// reports whether b is a valid JSON object whose every member name is
// plain (ASCII, no escape: encoding/json reads it as written) and each
// returned true for every member.
func plainMembers(b []byte, each func(name, value []byte) bool) bool {
	if !json.Valid(b) {
		return false
	}
	i, ok := object(b)
	if !ok {
		return false
	}
	for {
		name, value, next, more := member(b, i)
		if !more {
			return true
		}
		n, plain := plainString(name)
		if !plain || !each(n, value) {
			return false
		}
		i = next
	}
}

// claimIndex returns the ASCII name n's index in claimNames; notClaim when
// it is no claim's; foldsClaim when it matches one only case-insensitively,
// as encoding/json also matches a struct field.
func claimIndex(n []byte) int {
	for k, name := range claimNames {
		if len(n) == len(name) && strings.EqualFold(string(n), name) {
			if string(n) != name {
				return foldsClaim
			}
			return k
		}
	}
	return notClaim
}

// stringList returns the JSON array of strings v as encoding/json decodes
// it into a []string (an empty array is an empty, non-nil slice), ok false
// for anything else.
func stringList(v []byte) ([]string, bool) {
	if len(v) == 0 || v[0] != '[' {
		return nil, false
	}
	out := []string{}
	for i := 1; ; {
		i = skipSpace(v, i)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
		if i >= len(v) || v[i] != '"' {
			return out, i < len(v) && v[i] == ']'
		}
		j := skipString(v, i)
		out = append(out, unquote(v[i:j]))
		i = j
	}
}

// maxSecondsDigits bounds a time read here: 12 digits reach the year
// 33658, and every such count of seconds is exact in the float64 golang-jwt
// decodes it through.
const maxSecondsDigits = 12

// seconds returns the JSON number v when it is a whole, non-negative count
// of seconds written without a fraction or exponent.
func seconds(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > maxSecondsDigits {
		return 0, false
	}
	var n int64
	for _, d := range v {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int64(d-'0')
	}
	return n, true
}
