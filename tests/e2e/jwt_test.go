package e2e

import (
	"net/http"
	"testing"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"
)

const jwtSecret = "an-hs256-secret-of-at-least-32-bytes!"

func token(t *testing.T, secret string, claims jwtlib.MapClaims) string {
	t.Helper()
	s, err := jwtlib.NewWithClaims(jwtlib.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The jwt plugin, a custom plugin built like any third-party one, carries
// scopes that the server enforces: other conversations get 403.
func TestJWTScopes(t *testing.T) {
	s := startServer(t, keyCfg()+`  chains:
    events: [query, header, jwt, bearer]
    rest: [header, jwt, bearer]
plugins:
  instances:
    jwt:
      config:
        secret: "`+jwtSecret+`"
`)
	mine := s.createConversation(t, key)
	other := s.createConversation(t, key)
	exp := time.Now().Add(time.Hour).Unix()
	scoped := token(t, jwtSecret, jwtlib.MapClaims{"sub": "alice", "exp": exp, "conversations": []string{mine}})
	tests := []struct {
		name string
		conv string
		tok  string
		want int
	}{
		{"own conversation", mine, scoped, 101},
		{"other conversation", other, scoped, 403},
		{"unscoped token", other, token(t, jwtSecret, jwtlib.MapClaims{"sub": "bob", "exp": exp}), 101},
		{"expired", mine, token(t, jwtSecret, jwtlib.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}), 401},
		{"not yet valid", mine, token(t, jwtSecret, jwtlib.MapClaims{"sub": "alice", "exp": exp, "nbf": time.Now().Add(time.Hour).Unix()}), 401},
		{"wrong secret", mine, token(t, "another-secret-that-is-32-bytes-long!!", jwtlib.MapClaims{"sub": "alice", "exp": exp}), 401},
		{"plain key still works after jwt abstains", mine, key, 101},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, resp, err := s.dial(t, "/sockets/events/"+tt.conv, http.Header{"Authorization": {"Bearer " + tt.tok}})
			if tt.want == 101 {
				if err != nil {
					t.Fatalf("dial: %v (status %d)", err, status(resp))
				}
				mustReady(t, c)
				return
			}
			if err == nil || status(resp) != tt.want {
				t.Fatalf("status = %d, want %d", status(resp), tt.want)
			}
		})
	}
	// REST honours the same scopes.
	if code, _ := s.request(t, "GET", "/api/conversations/"+other, nil, "Authorization", "Bearer "+scoped); code != 403 {
		t.Errorf("REST get of another conversation = %d, want 403", code)
	}
	if code, _ := s.request(t, "GET", "/api/conversations/"+mine, nil, "Authorization", "Bearer "+scoped); code != 200 {
		t.Errorf("REST get of own conversation = %d, want 200", code)
	}
}
