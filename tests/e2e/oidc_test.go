package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/agent-server/agent-server/plugins/subprotocol"
)

// minRefresh is the oidc plugin's min_refresh_interval in these tests.
const minRefresh = time.Second

// Token surgery for the refusals: each keeps the provider's real token but
// breaks one thing.
func tokenParts(t *testing.T, tok string) (header, payload map[string]any, sig string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %d parts", len(parts))
	}
	dec := func(s string, v any) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || json.Unmarshal(b, v) != nil {
			t.Fatalf("bad token segment: %v", err)
		}
	}
	dec(parts[0], &header)
	dec(parts[1], &payload)
	return header, payload, parts[2]
}

func joinToken(t *testing.T, header, payload map[string]any, sig string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(payload) + "." + sig
}

// forged keeps the signature but claims another subject.
func forged(t *testing.T, tok string) string {
	h, p, sig := tokenParts(t, tok)
	p["sub"] = "admin"
	return joinToken(t, h, p, sig)
}

// unsigned is the token with alg none and no signature.
func unsigned(t *testing.T, tok string) string {
	h, p, _ := tokenParts(t, tok)
	h["alg"] = "none"
	return joinToken(t, h, p, "")
}

// withKid names a signing key the provider never had.
func withKid(t *testing.T, tok, kid string) string {
	h, p, sig := tokenParts(t, tok)
	h["kid"] = kid
	return joinToken(t, h, p, sig)
}

// opens dials the events socket with the token as a bearer and reports the
// handshake status (101 once full_state arrived).
func opens(t *testing.T, s *server, conv, auth string) int {
	t.Helper()
	c, resp, err := s.dial(t, "/sockets/events/"+conv, http.Header{"Authorization": {"Bearer " + auth}})
	if err != nil {
		return status(resp)
	}
	mustReady(t, c)
	c.Close()
	return http.StatusSwitchingProtocols
}

// The oidc plugin against a real OpenID provider, run as its own process,
// in one chain with bearer and jwt.
func TestOIDCWithARealProvider(t *testing.T) {
	idp := startProvider(t, 0)
	counter := newJWKSCounter(t, idp)
	s := startServer(t, keyCfg()+`  failures_per_minute: 0
  chains:
    events: [bearer, oidc, jwt]
    rest: [header, oidc]
plugins:
  instances:
    oidc:
      config:
        issuer: "`+idp.issuer()+`"
        audience: web
        allow_insecure_issuer: true
        jwks_url: "`+counter.url()+`"
        min_refresh_interval: `+minRefresh.String()+`
    jwt:
      config:
        secret: "`+jwtSecret+`"
log:
  level: debug
`)
	conv := s.createConversation(t, key)
	idToken := idp.signIn(t, "web", providerUser)
	if h, _, _ := tokenParts(t, idToken); h["alg"] != "RS256" {
		t.Fatalf("the provider signed with %v, want RS256", h["alg"])
	}
	hsToken := token(t, jwtSecret, jwtlib.MapClaims{"sub": "svc", "exp": time.Now().Add(time.Hour).Unix()})
	secrets := []string{idToken, hsToken}

	t.Run("shared header: each credential decided by its own plugin", func(t *testing.T) {
		for _, tc := range []struct {
			name, auth, by, subject string
		}{
			{"static key", key, "bearer", ""},
			{"IdP token", idToken, "oidc", "id1"},
			{"HS256 token", hsToken, "jwt", "svc"},
		} {
			if got := opens(t, s, conv, tc.auth); got != 101 {
				t.Errorf("%s: %d, want 101", tc.name, got)
				continue
			}
			line := regexp.MustCompile(`msg="authentication allowed".*authenticator=` + tc.by + ` subject=` + regexp.QuoteMeta(tc.subject))
			if tc.subject == "" {
				line = regexp.MustCompile(`msg="authentication allowed".*authenticator=` + tc.by + ` `)
			}
			s.waitForLog(t, line)
		}
		wrongHS := token(t, "another-secret-that-is-32-bytes-long!!", jwtlib.MapClaims{"sub": "svc", "exp": time.Now().Add(time.Hour).Unix()})
		for _, tc := range []struct{ name, auth, by string }{
			{"wrong static key", "not-" + key, "bearer"},
			{"forged IdP token", forged(t, idToken), "oidc"},
			{"HS256 token with the wrong secret", wrongHS, "jwt"},
		} {
			if got := opens(t, s, conv, tc.auth); got != 401 {
				t.Errorf("%s: %d, want 401", tc.name, got)
			}
			s.waitForLog(t, regexp.MustCompile(`msg="authentication denied".*authenticator=`+tc.by+` `))
		}
	})

	t.Run("a browser sends the IdP token in the subprotocol", func(t *testing.T) {
		c, resp, err := s.dial(t, "/sockets/events/"+conv, http.Header{"Sec-WebSocket-Protocol": {subprotocol.Protocol + ", " + subprotocol.Entry(idToken)}})
		if err != nil {
			t.Fatalf("dial: %v (%d)", err, status(resp))
		}
		if c.Subprotocol() != subprotocol.Protocol {
			t.Errorf("echoed %q, want only %q", c.Subprotocol(), subprotocol.Protocol)
		}
		mustReady(t, c)
	})

	t.Run("refused: forged, wrong audience, alg none", func(t *testing.T) {
		apiToken := idp.signIn(t, "api", providerUser) // issued for the client "api"
		for name, tok := range map[string]string{
			"forged":         forged(t, idToken),
			"wrong audience": apiToken,
			"alg none":       unsigned(t, idToken),
		} {
			if got := opens(t, s, conv, tok); got != 401 {
				t.Errorf("%s: %d, want 401", name, got)
			}
		}
		secrets = append(secrets, apiToken)
	})

	t.Run("the provider restarts with a new key: its new tokens work", func(t *testing.T) {
		idp = idp.restart()
		newToken := idp.signIn(t, "web", providerUser2)
		h1, _, _ := tokenParts(t, idToken)
		h2, _, _ := tokenParts(t, newToken)
		if h1["kid"] == h2["kid"] {
			t.Fatal("the restarted provider kept its key")
		}
		time.Sleep(minRefresh) // the last fetch may have been less than min_refresh_interval ago
		if got := opens(t, s, conv, newToken); got != 101 {
			t.Errorf("token of the new key: %d, want 101", got)
		}
		secrets = append(secrets, newToken)
	})

	t.Run("the provider stops: known keys work, the rest fail closed", func(t *testing.T) {
		unused := idp.signIn(t, "web", providerUser) // the current key, never seen by the cache
		idp.stop()
		time.Sleep(minRefresh)
		if got := opens(t, s, conv, unused); got != 101 {
			t.Errorf("a known key while the provider is down: %d, want 101", got)
		}
		if got := opens(t, s, conv, withKid(t, unused, "rotated-in-during-the-outage")); got != 503 {
			t.Errorf("an unknown key while the provider is down: %d, want 503", got)
		}
		secrets = append(secrets, unused)
	})

	t.Run("a burst of unknown kids reaches the provider at most once per interval", func(t *testing.T) {
		idp = idp.restart()
		base := idp.signIn(t, "web", providerUser)
		time.Sleep(minRefresh)
		before := counter.hits.Load()
		const n, workers = 1000, 8
		var next atomic.Int64
		var wrong atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Go(func() {
				for i := next.Add(1); i <= n; i = next.Add(1) {
					code, _ := s.request(t, "GET", "/api/conversations/count", nil, "Authorization", "Bearer "+withKid(t, base, fmt.Sprintf("random-%d", i)))
					if code != 503 && code != 401 {
						wrong.Add(1)
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		fetches := counter.hits.Load() - before
		allowed := 1 + int64(elapsed/minRefresh)
		t.Logf("%d tokens with unknown kids in %s: %d JWKS requests (at most %d allowed at one per %s)", n, elapsed.Round(time.Millisecond), fetches, allowed, minRefresh)
		if fetches > allowed {
			t.Errorf("%d JWKS requests in %s, want at most %d", fetches, elapsed, allowed)
		}
		if wrong.Load() > 0 {
			t.Errorf("%d requests were not refused (503 or 401)", wrong.Load())
		}
		secrets = append(secrets, base)
	})

	log := s.Log()
	for _, secret := range secrets {
		sig := secret[strings.LastIndexByte(secret, '.')+1:]
		if strings.Contains(log, secret) || (sig != "" && strings.Contains(log, sig)) {
			t.Errorf("a token reached the server log")
		}
	}
}

// waitForLog waits up to 10 s for a line of the server's log to match re.
func (s *server) waitForLog(t *testing.T, re *regexp.Regexp) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !re.MatchString(s.Log()) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line matches %s:\n%s", re, s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Several issuers are several instances of the one binary, each abstaining
// on the other's tokens; this chain runs jwt first and bearer last, and a
// flood of unknown kids is throttled like wrong credentials.
func TestOIDCSeveralIssuersAndThrottling(t *testing.T) {
	a := startProvider(t, 0)
	b := startProvider(t, 0)
	s := startServer(t, keyCfg()+`  failures_per_minute: 4
  chains:
    events: [jwt, oidc-b, oidc, bearer]
    rest: [header, bearer]
plugins:
  instances:
    oidc:
      config: {issuer: "`+a.issuer()+`", audience: web, allow_insecure_issuer: true, min_refresh_interval: 1h}
    oidc-b:
      path: `+filepath.Join(binDir, "plugins", "auth-oidc")+`
      config: {issuer: "`+b.issuer()+`", audience: [web, api], allow_insecure_issuer: true, required_claims: {sub: [id1]}}
    jwt:
      config:
        secret: "`+jwtSecret+`"
`)
	conv := s.createConversation(t, key)
	for name, tc := range map[string]struct {
		auth string
		want int
	}{
		"issuer A (discovered keys)":                {a.signIn(t, "web", providerUser), 101},
		"issuer B, another audience it lists":       {b.signIn(t, "api", providerUser), 101},
		"issuer B refuses a user it does not admit": {b.signIn(t, "web", providerUser2), 401},
		"static key":  {key, 101},
		"HS256 token": {token(t, jwtSecret, jwtlib.MapClaims{"sub": "svc", "exp": time.Now().Add(time.Hour).Unix()}), 101},
	} {
		if got := opens(t, s, conv, tc.auth); got != tc.want {
			t.Errorf("%s: %d, want %d", name, got, tc.want)
		}
	}
	// One failure so far (the user B does not admit); three tokens naming
	// unknown keys fail closed and count too; then the address is throttled.
	unknown := withKid(t, a.signIn(t, "web", providerUser), "unknown")
	for i := range 3 {
		if got := opens(t, s, conv, unknown); got != 503 {
			t.Fatalf("unknown kid %d: %d, want 503", i, got)
		}
	}
	if got := opens(t, s, conv, key); got != 429 {
		t.Errorf("after four failures with failures_per_minute 4: %d, want 429", got)
	}
}
