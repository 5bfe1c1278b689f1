package jwttoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"reflect"
	"slices"
	"strings"
	"testing"

	jwtlib "github.com/golang-jwt/jwt/v5"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// signed returns the compact token of header and payload, signed with
// HS256 under key whatever the header says.
func signed(header, payload, key string) string {
	return signedText(seg(header)+"."+seg(payload), key)
}

// signedText returns text (header.payload, encoded) with its HS256
// signature under key.
func signedText(text, key string) string {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(text))
	return text + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// hs256Reference is what golang-jwt decodes from tok into the jwt
// plugin's claims, its signature checked and no claim validated; ok is
// false when golang-jwt refuses tok or it has no exp.
func hs256Reference(tok string) (Claims, bool) {
	var rc struct {
		jwtlib.RegisteredClaims
		Conversations []string `json:"conversations,omitempty"`
		Roles         []string `json:"roles,omitempty"`
	}
	p := jwtlib.NewParser(jwtlib.WithValidMethods([]string{"HS256"}), jwtlib.WithoutClaimsValidation())
	if _, err := p.ParseWithClaims(tok, &rc, func(*jwtlib.Token) (any, error) { return []byte(testSecret), nil }); err != nil || rc.ExpiresAt == nil {
		return Claims{}, false
	}
	c := Claims{
		Issuer: rc.Issuer, Subject: rc.Subject, ID: rc.ID, Audience: rc.Audience,
		Expiry: rc.ExpiresAt.Unix(), Conversations: rc.Conversations, Roles: rc.Roles,
	}
	if rc.NotBefore != nil {
		c.NotBefore, c.HasNotBefore = rc.NotBefore.Unix(), true
	}
	return c, true
}

// sameClaims compares as the jwt plugin uses claims: the audience only by
// its members, everything else exactly (an empty list is not an absent
// one).
func sameClaims(a, b Claims) bool {
	if !slices.Equal(a.Audience, b.Audience) {
		return false
	}
	a.Audience, b.Audience = nil, nil
	return reflect.DeepEqual(a, b)
}

// assertAgreesWithGolangJWT fails when Verify accepts tok and golang-jwt
// does not, or reads other claims from it, or Inspect does not read it as
// an HS256 JWT of the same issuer.
func assertAgreesWithGolangJWT(t *testing.T, v *HS256, tok string) bool {
	t.Helper()
	var got Claims
	ok := v.Verify(tok, &got)
	if !ok {
		return false
	}
	want, wantOK := hs256Reference(tok)
	if !wantOK {
		t.Fatalf("Verify accepted %q, which golang-jwt refuses", tok)
	}
	if !sameClaims(got, want) {
		t.Fatalf("Verify(%q) read %+v; golang-jwt reads %+v", tok, got, want)
	}
	if shape, ok := Inspect(tok); !ok || shape.Alg != "HS256" || shape.Issuer != got.Issuer {
		t.Fatalf("Verify accepted %q, which Inspect reads as %+v, %v", tok, shape, ok)
	}
	return true
}

func TestHS256Verify(t *testing.T) {
	const hs = `{"alg":"HS256","typ":"JWT"}`
	exp := `"exp":1767323045`
	tests := []struct {
		name    string
		tok     string
		ok      bool
		subject string
	}{
		// The common shapes: verified here.
		{"sub and exp", signed(hs, `{"sub":"a",`+exp+`}`, testSecret), true, "a"},
		{"header alg alone", signed(`{"alg":"HS256"}`, `{"sub":"a",`+exp+`}`, testSecret), true, "a"},
		{"every claim read", signed(hs, `{"iss":"i","sub":"a","aud":["x","y"],`+exp+`,"nbf":1767320000,"iat":1767320000,"jti":"j","conversations":["c1"],"roles":["runtime"]}`, testSecret), true, "a"},
		{"aud one string", signed(hs, `{"sub":"a","aud":"x",`+exp+`}`, testSecret), true, "a"},
		{"empty lists", signed(hs, `{"sub":"a",`+exp+`,"aud":[],"conversations":[],"roles":[]}`, testSecret), true, "a"},
		{"other claims of any kind", signed(hs, `{"sub":"a",`+exp+`,"email":"e","n":1e999,"o":{"exp":"x"},"l":[1,{"sub":2}],"t":true,"z":null}`, testSecret), true, "a"},
		{"escapes in values", signed(hs, `{"sub":"a\"b\u00e9\ud83d\ude00",`+exp+`}`, testSecret), true, "a\"bé😀"},
		{"invalid UTF-8 in a value", signed(hs, "{\"sub\":\"a\xffb\","+exp+"}", testSecret), true, "a\ufffdb"},
		{"whitespace", signed(" { \"alg\" : \"HS256\" } ", " {\n\"sub\" : \"a\" ,\t"+exp+" } ", testSecret), true, "a"},
		{"no sub: read, the caller refuses", signed(hs, `{`+exp+`}`, testSecret), true, ""},
		// base64 as golang-jwt decodes it: line breaks inside a segment
		// skipped, the signature's two spare bits ignored.
		{"a line break inside the payload's segment", func() string {
			p := seg(`{"sub":"a",` + exp + `}`)
			return signedText(seg(hs)+"."+p[:5]+"\r\n"+p[5:], testSecret)
		}(), true, "a"},
		{"the signature's spare bits set", func() string {
			tok := signed(hs, `{"sub":"a",`+exp+`}`, testSecret)
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			last := strings.IndexByte(alphabet, tok[len(tok)-1])
			return tok[:len(tok)-1] + string(alphabet[last^1])
		}(), true, "a"},
		{"exp 0: read, the caller refuses", signed(hs, `{"sub":"a","exp":0}`, testSecret), true, "a"},

		// Left to golang-jwt: a signature that fails, or that is not HS256's.
		{"wrong key", signed(hs, `{"sub":"a",`+exp+`}`, strings.Repeat("x", 32)), false, ""},
		{"signature cut", signed(hs, `{"sub":"a",`+exp+`}`, testSecret)[1:], false, ""},
		{"two segments", seg(hs) + "." + seg(`{"sub":"a",`+exp+`}`), false, ""},
		{"four segments", signed(hs, `{"sub":"a",`+exp+`}`, testSecret) + ".x", false, ""},
		{"signature with a newline", func() string {
			tok := signed(hs, `{"sub":"a",`+exp+`}`, testSecret)
			return tok[:len(tok)-5] + "\n" + tok[len(tok)-5:]
		}(), false, ""},
		// The header: alg exactly HS256, named exactly once, and nothing golang-jwt fails on.
		{"alg HS512", signed(`{"alg":"HS512"}`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"alg none", signed(`{"alg":"none"}`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"alg lower case", signed(`{"alg":"hs256"}`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"alg escaped", signed(`{"alg":"\u0048S256"}`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"ALG beside alg", signed(`{"alg":"HS256","ALG":"RS256"}`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"alg twice", signed(`{"alg":"HS256","alg":"HS256"}`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"alg missing", signed(`{"typ":"JWT"}`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"an escaped name in the header", signed(`{"\u0061lg":"HS256","alg":"HS256"}`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"a number golang-jwt cannot hold", signed(`{"alg":"HS256","x":1e999}`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"header not an object", signed(`["HS256"]`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		{"header invalid", signed(`{"alg":"HS256"`, `{"sub":"a",`+exp+`}`, testSecret), false, ""},
		// The payload: every claim read of its expected type, once, under its exact name.
		{"no exp", signed(hs, `{"sub":"a"}`, testSecret), false, ""},
		{"exp a string", signed(hs, `{"sub":"a","exp":"1767323045"}`, testSecret), false, ""},
		{"exp with a fraction", signed(hs, `{"sub":"a","exp":1767323045.5}`, testSecret), false, ""},
		{"exp with an exponent", signed(hs, `{"sub":"a","exp":1.767323045e9}`, testSecret), false, ""},
		{"exp negative", signed(hs, `{"sub":"a","exp":-1}`, testSecret), false, ""},
		{"exp past 12 digits", signed(hs, `{"sub":"a","exp":1000000000000}`, testSecret), false, ""},
		{"exp null", signed(hs, `{"sub":"a","exp":null}`, testSecret), false, ""},
		{"exp twice", signed(hs, `{"sub":"a",`+exp+`,`+exp+`}`, testSecret), false, ""},
		{"EXP", signed(hs, `{"sub":"a","EXP":1767323045}`, testSecret), false, ""},
		{"Sub beside sub", signed(hs, `{"sub":"a","Sub":"b",`+exp+`}`, testSecret), false, ""},
		{"an escaped name", signed(hs, `{"\u0073ub":"a",`+exp+`}`, testSecret), false, ""},
		{"a non-ASCII name", signed(hs, "{\"\u017fub\":\"a\","+exp+"}", testSecret), false, ""},
		{"sub a number", signed(hs, `{"sub":7,`+exp+`}`, testSecret), false, ""},
		{"sub null", signed(hs, `{"sub":null,`+exp+`}`, testSecret), false, ""},
		{"iat a string", signed(hs, `{"sub":"a",`+exp+`,"iat":"now"}`, testSecret), false, ""},
		{"nbf with a fraction", signed(hs, `{"sub":"a",`+exp+`,"nbf":1.5}`, testSecret), false, ""},
		{"aud a number", signed(hs, `{"sub":"a",`+exp+`,"aud":1}`, testSecret), false, ""},
		{"aud null", signed(hs, `{"sub":"a",`+exp+`,"aud":null}`, testSecret), false, ""},
		{"aud with a number", signed(hs, `{"sub":"a",`+exp+`,"aud":["x",1]}`, testSecret), false, ""},
		{"roles a string", signed(hs, `{"sub":"a",`+exp+`,"roles":"runtime"}`, testSecret), false, ""},
		{"conversations null", signed(hs, `{"sub":"a",`+exp+`,"conversations":null}`, testSecret), false, ""},
		{"conversations with an object", signed(hs, `{"sub":"a",`+exp+`,"conversations":[{}]}`, testSecret), false, ""},
		{"payload an array", signed(hs, `[{"sub":"a",`+exp+`}]`, testSecret), false, ""},
		{"payload with trailing text", signed(hs, `{"sub":"a",`+exp+`}{}`, testSecret), false, ""},
		{"too long", signed(hs, `{"sub":"a",`+exp+`,"x":"`+strings.Repeat("x", maxLen)+`"}`, testSecret), false, ""},
	}
	v := NewHS256([]byte(testSecret))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c Claims
			if ok := v.Verify(tc.tok, &c); ok != tc.ok {
				t.Fatalf("Verify = %v, want %v", ok, tc.ok)
			}
			if !tc.ok {
				return
			}
			if c.Subject != tc.subject {
				t.Errorf("sub = %q, want %q", c.Subject, tc.subject)
			}
			assertAgreesWithGolangJWT(t, v, tc.tok)
		})
	}
}

// TestHS256VerifyReadsEveryClaim checks each claim's value, and that a
// Claims reused for another token keeps nothing of the last.
func TestHS256VerifyReadsEveryClaim(t *testing.T) {
	v := NewHS256([]byte(testSecret))
	var c Claims
	full := signed(`{"alg":"HS256"}`, `{"iss":"i","sub":"a","aud":["x","y"],"exp":1767323045,"nbf":1767320000,"iat":1,"jti":"j","conversations":["c1","c2"],"roles":["runtime"]}`, testSecret)
	if !v.Verify(full, &c) {
		t.Fatal("not verified")
	}
	want := Claims{Issuer: "i", Subject: "a", ID: "j", Audience: []string{"x", "y"}, Expiry: 1767323045, NotBefore: 1767320000, HasNotBefore: true, Conversations: []string{"c1", "c2"}, Roles: []string{"runtime"}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("claims = %+v, want %+v", c, want)
	}
	if !v.Verify(signed(`{"alg":"HS256"}`, `{"sub":"b","exp":2}`, testSecret), &c) {
		t.Fatal("not verified")
	}
	if want := (Claims{Subject: "b", Expiry: 2}); !reflect.DeepEqual(c, want) {
		t.Errorf("claims = %+v, want %+v", c, want)
	}
}

// TestHS256MatchesGolangJWT signs every header seed with every payload
// seed (each also with a sub and exp added) and checks that whatever
// Verify accepts, golang-jwt accepts with the same claims.
func TestHS256MatchesGolangJWT(t *testing.T) {
	v := NewHS256([]byte(testSecret))
	payloads := append([]string{}, payloadSeeds...)
	for _, p := range payloadSeeds {
		if i := strings.IndexByte(p, '{'); i >= 0 {
			payloads = append(payloads, p[:i+1]+`"sub":"s","exp":1767323045,`+p[i+1:], p[:i+1]+`"exp":1767323045,"sub":"s"}`)
		}
	}
	headers := append([]string{`{"alg":"HS256"}`}, headerSeeds...)
	accepted := 0
	for _, h := range headers {
		for _, p := range payloads {
			if assertAgreesWithGolangJWT(t, v, signed(h, p, testSecret)) {
				accepted++
			}
		}
	}
	// 616 of 4,841 when written: those with an HS256 header, a sub and an exp.
	if accepted < 500 {
		t.Fatalf("verified %d tokens: the corpus no longer reaches the fast path", accepted)
	}
}

// FuzzHS256 signs the fuzzed header and payload and checks Verify against
// golang-jwt.
func FuzzHS256(f *testing.F) {
	f.Add(`{"alg":"HS256"}`, `{"sub":"a","exp":1767323045}`)
	f.Add(`{"alg":"HS256","typ":"JWT"}`, `{"iss":"i","sub":"a","aud":["x"],"exp":1,"nbf":1,"iat":1,"jti":"j","conversations":["c"],"roles":["r"]}`)
	f.Add(`{"alg":"HS256"}`, `{"sub":"a","Exp":1,"exp":2}`)
	for _, h := range headerSeeds {
		f.Add(h, `{"sub":"a","exp":1}`)
	}
	for _, p := range payloadSeeds {
		f.Add(`{"alg":"HS256"}`, p)
	}
	v := NewHS256([]byte(testSecret))
	f.Fuzz(func(t *testing.T, header, payload string) {
		assertAgreesWithGolangJWT(t, v, signed(header, payload, testSecret))
	})
}

// BenchmarkHS256 measures Verify on the load generator's token, against
// golang-jwt's ParseWithClaims on the same.
func BenchmarkHS256(b *testing.B) {
	tok := signed(`{"alg":"HS256","typ":"JWT"}`, `{"exp":1767323045,"sub":"bench-0123456789ab-4711"}`, testSecret)
	b.Run("Verify", func(b *testing.B) {
		v := NewHS256([]byte(testSecret))
		var c Claims
		b.ReportAllocs()
		for b.Loop() {
			if !v.Verify(tok, &c) {
				b.Fatal("not verified")
			}
		}
	})
	b.Run("golang-jwt", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := hs256Reference(tok); !ok {
				b.Fatal("not verified")
			}
		}
	})
}
