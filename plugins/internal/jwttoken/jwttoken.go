// Package jwttoken is what the token plugins share about JSON Web Tokens.
//
// Inspect tells, without verifying anything, whether a token is a
// JSON Web Token and which issuer, algorithm and key it names. The token
// plugins that share the Authorization header use it to abstain on tokens
// that are not theirs: bearer and subprotocol on any JWT, jwt and oidc on a
// token that is not a JWT or comes from an issuer they do not serve.
//
// Nothing Inspect returns may be trusted: it only routes a token to the
// plugin that will verify it. HS256 verifies the common HS256 tokens
// without golang-jwt, and leaves every other to it; DenyReason names why
// golang-jwt refused one.
package jwttoken

import (
	"errors"
	"strings"

	jwtlib "github.com/golang-jwt/jwt/v5"
)

// maxLen bounds what is inspected; a longer token is not a JWT here.
const maxLen = 16 << 10

// Shape is what a token's unverified header and payload claim.
type Shape struct {
	Alg    string // header alg
	Kid    string // header kid, "" when absent
	Issuer string // payload iss, "" when absent or not a string
}

// Inspect reports whether tok is a compact JWS: three base64url segments,
// a JSON object header with a string alg, and a JSON object payload. It
// returns what the header and payload claim.
//
// It reads the header's alg and kid as encoding/json fills struct fields
// (names matched case-insensitively, the last match wins) and the payload's
// iss as it fills a map (the name exactly, the last one wins), without
// decoding the rest: it runs on every token the plugins see, before the one
// that verifies decodes it again.
func Inspect(tok string) (Shape, bool) {
	if len(tok) > maxLen {
		return Shape{}, false
	}
	h, rest, ok := strings.Cut(tok, ".")
	if !ok {
		return Shape{}, false
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok || !isB64(sig) { // isB64 also refuses a third dot
		return Shape{}, false
	}
	var buf [segmentBuf]byte // both segments in turn; the strings taken are copies
	b, ok := decodeSegment(buf[:], h)
	if !ok {
		return Shape{}, false
	}
	alg, kid, ok := header(b)
	if !ok {
		return Shape{}, false
	}
	if b, ok = decodeSegment(buf[:], p); !ok {
		return Shape{}, false
	}
	iss, ok := issuer(b)
	if !ok {
		return Shape{}, false
	}
	return Shape{Alg: alg, Kid: kid, Issuer: iss}, true
}

// IsJWT reports whether tok is a compact JWS (see Inspect).
func IsJWT(tok string) bool {
	_, ok := Inspect(tok)
	return ok
}

// Asymmetric reports whether alg is a public-key signature algorithm (RS*,
// PS*, ES*, EdDSA): the kind an identity provider signs with.
func (s Shape) Asymmetric() bool {
	switch {
	case s.Alg == "EdDSA":
		return true
	case len(s.Alg) == 5 && (strings.HasPrefix(s.Alg, "RS") || strings.HasPrefix(s.Alg, "PS") || strings.HasPrefix(s.Alg, "ES")):
		return true
	}
	return false
}

func isB64(seg string) bool {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// DenyReason names what golang-jwt found wrong with a token, without
// echoing the token.
func DenyReason(err error) string {
	switch {
	case errors.Is(err, jwtlib.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwtlib.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwtlib.ErrTokenUnverifiable), strings.Contains(err.Error(), "signing method"):
		// jwt wraps a refused alg as a signature error; its text tells.
		return "token signing method not accepted"
	case errors.Is(err, jwtlib.ErrTokenSignatureInvalid):
		return "invalid token signature"
	case errors.Is(err, jwtlib.ErrTokenRequiredClaimMissing):
		return "token lacks a required claim"
	case errors.Is(err, jwtlib.ErrTokenInvalidIssuer):
		return "token issuer not accepted"
	case errors.Is(err, jwtlib.ErrTokenInvalidAudience):
		return "token audience not accepted"
	}
	return "invalid token"
}
