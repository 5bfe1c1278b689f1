package jwttoken

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

func seg(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestInspect(t *testing.T) {
	hs := seg(`{"alg":"HS256"}`)
	obj := seg(`{}`)
	tests := []struct {
		name string
		tok  string
		ok   bool
		want Shape
	}{
		{"jwt", seg(`{"alg":"RS256","kid":"k1"}`) + "." + seg(`{"iss":"https://idp","sub":"a"}`) + ".c2ln", true, Shape{"RS256", "k1", "https://idp"}},
		{"unsigned jwt", seg(`{"alg":"none"}`) + "." + seg(`{"sub":"a"}`) + ".", true, Shape{Alg: "none"}},
		{"iss not a string", hs + "." + seg(`{"iss":7}`) + ".x", true, Shape{Alg: "HS256"}},
		{"iss null", hs + "." + seg(`{"iss":null}`) + ".x", true, Shape{Alg: "HS256"}},
		{"iss an object", hs + "." + seg(`{"iss":{"iss":"x"}}`) + ".x", true, Shape{Alg: "HS256"}},
		{"iss twice: the last", hs + "." + seg(`{"iss":"a","iss":"b"}`) + ".x", true, Shape{"HS256", "", "b"}},
		{"iss twice, the last a number", hs + "." + seg(`{"iss":"a","iss":1}`) + ".x", true, Shape{Alg: "HS256"}},
		{"iss in another case is not iss", hs + "." + seg(`{"ISS":"a","Iss":"b"}`) + ".x", true, Shape{Alg: "HS256"}},
		{"iss escaped", hs + "." + seg(`{"\u0069ss":"a\/b\u00e9"}`) + ".x", true, Shape{"HS256", "", "a/bé"}},
		{"iss invalid UTF-8", hs + "." + seg("{\"iss\":\"a\xffb\"}") + ".x", true, Shape{"HS256", "", "a\uFFFDb"}},
		{"iss lone surrogate", hs + "." + seg(`{"iss":"\ud800"}`) + ".x", true, Shape{"HS256", "", "\uFFFD"}},
		{"iss nested only", hs + "." + seg(`{"a":{"iss":"x"},"b":["iss","y"],"c":"\"iss\":\"z\""}`) + ".x", true, Shape{Alg: "HS256"}},
		{"whitespace", seg(" \t{ \"alg\" :\r\n\"HS256\" , \"kid\":\"k\" }\n") + "." + seg(` { "iss" : "i" } `) + ".x", true, Shape{"HS256", "k", "i"}},
		{"alg in another case", seg(`{"ALG":"HS256","Kid":"k"}`) + "." + obj + ".x", true, Shape{"HS256", "k", ""}},
		{"alg twice: the last", seg(`{"alg":"HS256","Alg":"RS256"}`) + "." + obj + ".x", true, Shape{Alg: "RS256"}},
		{"kid by Kelvin sign", seg(`{"alg":"HS256","\u212aid":"k"}`) + "." + obj + ".x", true, Shape{"HS256", "k", ""}},
		{"kid not a string", seg(`{"alg":"HS256","kid":["k"]}`) + "." + obj + ".x", true, Shape{Alg: "HS256"}},
		{"unregistered alg", seg(`{"alg":"X\u00e9"}`) + "." + obj + ".x", true, Shape{Alg: "Xé"}},
		{"large payload", hs + "." + seg(`{"iss":"i","pad":"`+strings.Repeat("p", 4000)+`"}`) + ".x", true, Shape{"HS256", "", "i"}},
		{"newline in a segment (base64 skips it)", hs[:4] + "\n" + hs[4:] + "." + obj + ".x", true, Shape{Alg: "HS256"}},
		{"api key", "sk-1234567890abcdef", false, Shape{}},
		{"dotted key", "a.b.c", false, Shape{}},
		{"empty segments", "..", false, Shape{}},
		{"empty header", "." + obj + ".x", false, Shape{}},
		{"empty payload", hs + "..x", false, Shape{}},
		{"no alg", seg(`{"typ":"JWT"}`) + "." + obj + ".x", false, Shape{}},
		{"alg empty", seg(`{"alg":""}`) + "." + obj + ".x", false, Shape{}},
		{"alg not a string", seg(`{"alg":1}`) + "." + obj + ".x", false, Shape{}},
		{"alg null last", seg(`{"alg":"HS256","alg":null}`) + "." + obj + ".x", false, Shape{}},
		{"kid out of float64 range", seg(`{"alg":"HS256","kid":[1e999]}`) + "." + obj + ".x", false, Shape{}},
		{"earlier alg out of float64 range", seg(`{"alg":-1e400,"alg":"HS256"}`) + "." + obj + ".x", false, Shape{}},
		{"other member out of float64 range", seg(`{"alg":"HS256","x":1e999}`) + "." + seg(`{"iss":1e999}`) + ".x", true, Shape{Alg: "HS256"}},
		{"header an array", seg(`[{"alg":"HS256"}]`) + "." + obj + ".x", false, Shape{}},
		{"header null", seg(`null`) + "." + obj + ".x", false, Shape{}},
		{"header trailing data", seg(`{"alg":"HS256"}x`) + "." + obj + ".x", false, Shape{}},
		{"header trailing comma", seg(`{"alg":"HS256",}`) + "." + obj + ".x", false, Shape{}},
		{"payload not an object", hs + "." + seg(`[1]`) + ".x", false, Shape{}},
		{"payload null", hs + "." + seg(`null`) + ".x", false, Shape{}},
		{"payload a string", hs + "." + seg(`"iss"`) + ".x", false, Shape{}},
		{"payload two objects", hs + "." + seg(`{}{}`) + ".x", false, Shape{}},
		{"payload unterminated", hs + "." + seg(`{"iss":"x"`) + ".x", false, Shape{}},
		{"payload control character", hs + "." + seg("{\"iss\":\"a\x01\"}") + ".x", false, Shape{}},
		{"payload bad number", hs + "." + seg(`{"n":01}`) + ".x", false, Shape{}},
		{"JWE (five parts)", strings.Repeat(seg(`{"alg":"A256KW"}`)+".", 4) + "x", false, Shape{}},
		{"four parts", hs + "." + obj + ".x.y", false, Shape{}},
		{"padded segment", hs + "=." + obj + ".x", false, Shape{}},
		{"standard alphabet", seg(`{"alg":"HS256","kid":"??>"}`) + "." + obj + ".x", true, Shape{"HS256", "??>", ""}},
		{"standard alphabet, not url", strings.NewReplacer("_", "/", "-", "+").Replace(seg(`{"alg":"HS256","kid":"??>"}`)) + "." + obj + ".x", false, Shape{}},
		{"bad base64 length", hs + "A." + obj + ".x", false, Shape{}},
		{"bad signature alphabet", hs + "." + obj + ".a+b", false, Shape{}},
		{"too long", hs + "." + seg(`{"x":"`+strings.Repeat("a", maxLen)+`"}`) + ".x", false, Shape{}},
	}
	for _, tc := range tests {
		got, ok := Inspect(tc.tok)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: Inspect = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
		if ref, refOK := inspectReference(tc.tok); ref != got || refOK != ok {
			t.Errorf("%s: Inspect = %+v, %v; the reference says %+v, %v", tc.name, got, ok, ref, refOK)
		}
	}
}

// TestInspectMatchesReference runs Inspect and the plain encoding/json
// reference over every combination of tricky headers, payloads, encodings
// and signatures.
func TestInspectMatchesReference(t *testing.T) {
	n := 0
	for _, h := range referenceJSON(headerSeeds) {
		for _, p := range referenceJSON(payloadSeeds) {
			for _, sig := range []string{"", "x", "c2ln", "a+b", "a.b", "="} {
				for _, tok := range []string{h + "." + p + "." + sig, h + "=." + p + "." + sig, h + "." + p[:len(p)/2] + "\r\n" + p[len(p)/2:] + "." + sig} {
					assertMatchesReference(t, tok)
					n++
				}
			}
		}
	}
	for _, tok := range []string{"", ".", "..", "...", "a.b.c", "a..", ".a.", "sk-x", strings.Repeat(".", 5)} {
		assertMatchesReference(t, tok)
		n++
	}
	if n < 10000 {
		t.Fatalf("checked %d tokens, want the whole corpus", n)
	}
}

// headerSeeds and payloadSeeds are JSON texts, valid or not, that stress
// how Inspect reads alg, kid and iss.
var (
	headerSeeds = []string{
		`{"alg":"HS256"}`, `{"alg":"RS256","kid":"k1"}`, `{"alg":"none"}`, `{"alg":"EdDSA","kid":"\u00e9"}`,
		`{"ALG":"HS256"}`, `{"Alg":"HS256","alg":"RS256"}`, `{"alg":"RS256","alg":5}`, `{"alg":"HS256","alg":null}`,
		`{"alg":""}`, `{"alg":"\u0048S256"}`, `{"\u0061lg":"HS256"}`, `{"al\u0067":"HS256","kid":7}`,
		`{"alg":"HS256","kid":"a","KID":"b"}`, `{"alg":"HS256","\u212aid":"kelvin"}`, `{"alg":"HS256","k\u0131d":"dotless"}`,
		"{\"alg\":\"HS256\",\"\u212aid\":\"raw kelvin\"}", "{\"\u017flg\":\"HS256\"}", `{"alg":"HS256","kid":"\ud83d\ude00"}`,
		`{"alg":"HS256","kid":"\ud83d"}`, "{\"alg\":\"HS256\",\"kid\":\"\xff\"}", "{\"alg\":\"HS256\",\"k\xffd\":\"x\"}",
		`{"alg":"HS\u00e9"}`, " { \"alg\" : \"HS256\" } ", `{"alg":"HS256"}x`, `{"alg":"HS256",}`, `[{"alg":"HS256"}]`,
		`null`, `"alg"`, `{}`, `{"alg":{"x":"y"}}`, `{"alg":["HS256"]}`, `{"x":{"alg":"RS256"},"alg":"HS256"}`,
		`{"x":"\"alg\":1","alg":"HS256"}`, `{"alg":"HS256","kid":"k\\"}`, "\ufeff{\"alg\":\"HS256\"}", ``, `{"alg":"HS256"`,
		`{"alg":"HS256","kid":1e999}`, `{"alg":"HS256","kid":{"a":[-1.5E+400]}}`, `{"kid":1e308,"alg":"HS256"}`,
		`{"alg":"HS256","x":1e999}`, `{"alg":"HS256","kid":-0.0e-999}`, `{"alg":"HS256","kid":true,"kid":"k"}`,
		`{"alg":"HS256","typ":"JWT","kid":"` + strings.Repeat("k", 900) + `"}`, `{"alg" "HS256"}`, `{alg:"HS256"}`,
	}
	payloadSeeds = []string{
		`{}`, `{"iss":"x"}`, `{"iss":7}`, `{"iss":null}`, `{"iss":"a","iss":"b"}`, `{"iss":"a","iss":1}`, `{"ISS":"x"}`,
		`{"Iss":"x","iss":"y"}`, `{"\u0069ss":"esc"}`, `{"iss":"\u00e9\n"}`, "{\"iss\":\"\xff\"}", `{"iss":"\ud800"}`,
		`[]`, `[1]`, `null`, `"s"`, `1`, `true`, ` {"iss" : "w" } `, `{"a":{"iss":"nested"}}`, `{"a":["iss","x"],"iss":"top"}`,
		`{"a":"\"iss\":\"no\"","b":1}`, `{"iss":"x",}`, `{"iss":"x"}{}`, `{"iss":"x"`, ``, `{"iss":1e999}`,
		`{"n":-1.5e+10,"t":true,"f":false,"z":null,"iss":"after"}`, `{"n":01}`, "{\"s\":\"\x01\"}", `{"iss":"\/"}`,
		`{"iss":["x"]}`, `{"iss":{"x":1}}`, `{"iss":"big` + strings.Repeat("a", 2000) + `"}`, `{"iss"}`, `{"iss":}`,
		`{"sub":"bench-0123456789ab-4711","exp":1767323045}`, "{\"iss\":\"i\"}\x00", `{"i\u0073s":"x","iss":"y"}`,
	}
)

// referenceJSON encodes each seed as a segment, and also each seed cut
// short and each seed with a byte flipped to a JSON delimiter.
func referenceJSON(seeds []string) []string {
	var out []string
	for _, s := range seeds {
		out = append(out, seg(s))
		if len(s) > 2 {
			out = append(out, seg(s[:len(s)-2]), seg(s[:len(s)/2]+`"`+s[len(s)/2+1:]))
		}
	}
	return out
}

func assertMatchesReference(t *testing.T, tok string) {
	t.Helper()
	got, ok := Inspect(tok)
	want, wantOK := inspectReference(tok)
	if got != want || ok != wantOK {
		t.Fatalf("Inspect(%q) = %+v, %v; the reference says %+v, %v", tok, got, ok, want, wantOK)
	}
}

func TestAsymmetric(t *testing.T) {
	for alg, want := range map[string]bool{"RS256": true, "PS384": true, "ES512": true, "EdDSA": true, "HS256": false, "none": false, "RS": false, "ES256K": false} {
		if got := (Shape{Alg: alg}).Asymmetric(); got != want {
			t.Errorf("%s: Asymmetric = %v, want %v", alg, got, want)
		}
	}
}

// FuzzInspect checks Inspect against the reference on whole tokens, and on
// the fuzzed text as a header and as a payload, where most of what Inspect
// reads lies.
func FuzzInspect(f *testing.F) {
	f.Add(seg(`{"alg":"RS256"}`) + "." + seg(`{"iss":"x"}`) + ".sig")
	f.Add("a.b.c")
	for _, s := range append(append([]string{}, headerSeeds...), payloadSeeds...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range []string{s, seg(s) + "." + seg(`{}`) + ".x", seg(`{"alg":"HS256"}`) + "." + seg(s) + ".x"} {
			got, ok := Inspect(tok)
			if !ok && got != (Shape{}) {
				t.Errorf("not a JWT but a shape: %+v", got)
			}
			if ok && (got.Alg == "" || strings.Count(tok, ".") != 2) {
				t.Errorf("a JWT without alg or three parts: %q", tok)
			}
			if want, wantOK := inspectReference(tok); got != want || ok != wantOK {
				t.Errorf("Inspect(%q) = %+v, %v; the reference says %+v, %v", tok, got, ok, want, wantOK)
			}
		}
	})
}

// inspectReference is Inspect as it was before it read the JSON itself:
// the plain encoding/json decode that defines what Inspect decides.
func inspectReference(tok string) (Shape, bool) {
	if len(tok) > maxLen || strings.Count(tok, ".") != 2 {
		return Shape{}, false
	}
	h, rest, _ := strings.Cut(tok, ".")
	p, sig, _ := strings.Cut(rest, ".")
	for i := 0; i < len(sig); i++ {
		c := sig[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return Shape{}, false
		}
	}
	decode := func(seg string, v any) bool {
		b, err := base64.RawURLEncoding.DecodeString(seg)
		if err != nil {
			return false
		}
		return json.Unmarshal(b, v) == nil
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

// nameFoldsReference is nameFolds as it was, decoding the name with
// encoding/json first: what the walk in place must answer.
func nameFoldsReference(q []byte, upper string) bool {
	name := []byte(unquote(q))
	k := 0
	for i := 0; i < len(name); k++ {
		r, n := rune(name[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRune(name[i:])
			r = foldRune(r)
		} else if 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		if k >= len(upper) || r != rune(upper[k]) {
			return false
		}
		i += n
	}
	return k == len(upper)
}

// Every rune that case-folds (and a sample of the others), raw and as a
// \u escape (surrogate pairs too), around the letters of the names looked
// for: the walk in place decides as decoding first does.
func TestNameFoldsMatchesDecoding(t *testing.T) {
	var names []string
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0x80 && unicode.SimpleFold(r) == r && r%251 != 0 && !utf16.IsSurrogate(r) {
			continue
		}
		if r < 0x10000 {
			names = append(names, fmt.Sprintf(`\u%04x`, r))
		} else {
			a, b := utf16.EncodeRune(r)
			names = append(names, fmt.Sprintf(`\u%04X\u%04x`, a, b))
		}
		if r >= 0x20 && r != '"' && r != '\\' && !utf16.IsSurrogate(r) {
			names = append(names, string(r))
		}
	}
	names = append(names, "\xff", `\n`, `\/`, `\"`, `\\`, `\ud800`, `\udc00`, "\xe2\x84")
	for _, a := range names {
		for _, tail := range []string{"", "lg", "id", "ss", "LG", "Id"} {
			for _, head := range []string{"", "a", "k", "i"} {
				q := []byte(`"` + head + a + tail + `"`)
				for _, up := range []string{"ALG", "KID"} {
					if got, want := nameFolds(q, up), nameFoldsReference(q, up); got != want {
						t.Fatalf("nameFolds(%q, %s) = %v, decoding first says %v", q, up, got, want)
					}
				}
				if got, want := nameIs(q, "iss"), unquote(q) == "iss"; got != want {
					t.Fatalf("nameIs(%q, iss) = %v, decoding says %v", q, got, want)
				}
			}
		}
	}
}

// A header or payload of many escaped or non-ASCII names, as long as a
// token may be, costs no allocation per name (it cost one decode each).
func TestHostileNamesDoNotAllocate(t *testing.T) {
	for name, tok := range map[string]string{
		"unicode header names":  seg(`{"alg":"HS256"`+strings.Repeat(`,"é":0`, 1700)+`}`) + "." + seg(`{}`) + ".x",
		"escaped header names":  seg(`{"alg":"HS256"`+strings.Repeat(`,"\n":0`, 1700)+`}`) + "." + seg(`{}`) + ".x",
		"escaped payload names": seg(`{"alg":"HS256"}`) + "." + seg(`{"iss":"i"`+strings.Repeat(`,"\u00e9":0`, 1000)+`}`) + ".x",
	} {
		if _, ok := Inspect(tok); !ok {
			t.Fatalf("%s: not a JWT", name)
		}
		if n := testing.AllocsPerRun(5, func() { Inspect(tok) }); n > 4 {
			t.Errorf("%s: %.0f allocations per Inspect, want at most 4", name, n)
		}
	}
}
