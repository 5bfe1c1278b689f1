package jwttoken

import (
	"encoding/base64"
	"strings"
	"testing"
)

func seg(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestInspect(t *testing.T) {
	tests := []struct {
		name string
		tok  string
		ok   bool
		want Shape
	}{
		{"jwt", seg(`{"alg":"RS256","kid":"k1"}`) + "." + seg(`{"iss":"https://idp","sub":"a"}`) + ".c2ln", true, Shape{"RS256", "k1", "https://idp"}},
		{"unsigned jwt", seg(`{"alg":"none"}`) + "." + seg(`{"sub":"a"}`) + ".", true, Shape{Alg: "none"}},
		{"iss not a string", seg(`{"alg":"HS256"}`) + "." + seg(`{"iss":7}`) + ".x", true, Shape{Alg: "HS256"}},
		{"api key", "sk-1234567890abcdef", false, Shape{}},
		{"dotted key", "a.b.c", false, Shape{}},
		{"no alg", seg(`{"typ":"JWT"}`) + "." + seg(`{}`) + ".x", false, Shape{}},
		{"alg not a string", seg(`{"alg":1}`) + "." + seg(`{}`) + ".x", false, Shape{}},
		{"payload not an object", seg(`{"alg":"HS256"}`) + "." + seg(`[1]`) + ".x", false, Shape{}},
		{"JWE (five parts)", strings.Repeat(seg(`{"alg":"A256KW"}`)+".", 4) + "x", false, Shape{}},
		{"padded segment", seg(`{"alg":"HS256"}`) + "=." + seg(`{}`) + ".x", false, Shape{}},
		{"bad signature alphabet", seg(`{"alg":"HS256"}`) + "." + seg(`{}`) + ".a+b", false, Shape{}},
		{"too long", seg(`{"alg":"HS256"}`) + "." + seg(`{"x":"`+strings.Repeat("a", maxLen)+`"}`) + ".x", false, Shape{}},
	}
	for _, tc := range tests {
		got, ok := Inspect(tc.tok)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: Inspect = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestAsymmetric(t *testing.T) {
	for alg, want := range map[string]bool{"RS256": true, "PS384": true, "ES512": true, "EdDSA": true, "HS256": false, "none": false, "RS": false, "ES256K": false} {
		if got := (Shape{Alg: alg}).Asymmetric(); got != want {
			t.Errorf("%s: Asymmetric = %v, want %v", alg, got, want)
		}
	}
}

func FuzzInspect(f *testing.F) {
	f.Add(seg(`{"alg":"RS256"}`) + "." + seg(`{"iss":"x"}`) + ".sig")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		s, ok := Inspect(tok)
		if !ok && s != (Shape{}) {
			t.Errorf("not a JWT but a shape: %+v", s)
		}
		if ok && (s.Alg == "" || strings.Count(tok, ".") != 2) {
			t.Errorf("a JWT without alg or three parts: %q", tok)
		}
	})
}

// BenchmarkInspect measures Inspect on what the token plugins see: a JWT
// like the load generator's (HS256, sub and exp), one with an issuer and a
// key id, an identity provider's larger token, and an API key.
func BenchmarkInspect(b *testing.B) {
	idp := seg(`{"alg":"RS256","kid":"2024-06-key","typ":"JWT"}`) + "." +
		seg(`{"iss":"https://idp.example.com/realms/agents","aud":["agent-server","account"],"sub":"0f8e7d6c-5b4a-4321-9876-fedcba987654","exp":1767323045,"iat":1767319445,"email":"alice@example.com","email_verified":true,"groups":["dev","ops"],"convs":["c1","c2","c3"]}`) +
		"." + strings.Repeat("s", 342)
	for _, bc := range []struct{ name, tok string }{
		{"hs256", seg(`{"alg":"HS256","typ":"JWT"}`) + "." + seg(`{"exp":1767323045,"sub":"bench-0123456789ab-4711"}`) + "." + strings.Repeat("s", 43)},
		{"hs256 iss kid", seg(`{"alg":"HS256","kid":"k1","typ":"JWT"}`) + "." + seg(`{"exp":1767323045,"iss":"https://issuer","sub":"alice"}`) + "." + strings.Repeat("s", 43)},
		{"idp", idp},
		{"api key", "sk-0123456789abcdef0123456789abcdef"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if _, ok := Inspect(bc.tok); ok == (bc.name == "api key") {
				b.Fatalf("Inspect(%q) = %v", bc.tok, ok)
			}
			b.ReportAllocs()
			for b.Loop() {
				Inspect(bc.tok)
			}
		})
	}
}
