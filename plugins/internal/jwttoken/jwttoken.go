// Package jwttoken is what the token plugins share about JSON Web Tokens.
//
// Inspect tells, without verifying anything, whether a token is a
// JSON Web Token and which issuer, algorithm and key it names. The token
// plugins that share the Authorization header use it to abstain on tokens
// that are not theirs: bearer and subprotocol on any JWT, jwt and oidc on a
// token that is not a JWT or comes from an issuer they do not serve.
//
// Nothing Inspect returns may be trusted: it only routes a token to the
// plugin that will verify it. DenyReason names why a verification failed.
package jwttoken

import (
	"encoding/base64"
	"encoding/json"
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
func Inspect(tok string) (Shape, bool) {
	if len(tok) > maxLen || strings.Count(tok, ".") != 2 {
		return Shape{}, false
	}
	h, rest, _ := strings.Cut(tok, ".")
	p, sig, _ := strings.Cut(rest, ".")
	if !isB64(sig) {
		return Shape{}, false
	}
	var header struct {
		Alg any `json:"alg"`
		Kid any `json:"kid"`
	}
	if !decode(h, &header) {
		return Shape{}, false
	}
	alg, ok := header.Alg.(string)
	if !ok || alg == "" {
		return Shape{}, false
	}
	var payload map[string]json.RawMessage
	if !decode(p, &payload) || payload == nil {
		return Shape{}, false
	}
	s := Shape{Alg: alg}
	s.Kid, _ = header.Kid.(string)
	if raw, ok := payload["iss"]; ok {
		_ = json.Unmarshal(raw, &s.Issuer)
	}
	return s, true
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

func decode(seg string, v any) bool {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return false
	}
	return json.Unmarshal(b, v) == nil
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
