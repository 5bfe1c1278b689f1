package cli

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// sessionKeys gathers the valid keys: auth.keys, then the OpenHands
// environment variables. When there are none and auth is not disabled, it
// generates one and prints it to out (stderr) once, never to the log.
func sessionKeys(cfg config.Config, getenv func(string) string, out io.Writer) ([]string, error) {
	keys := append([]string(nil), cfg.Auth.Keys...)
	envKeys, err := core.KeysFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	keys = append(keys, envKeys...)
	if _, err := core.NewKeySet(keys); err != nil {
		return nil, fmt.Errorf("session keys: %w", err)
	}
	if len(keys) > 0 || cfg.Auth.Disabled {
		return keys, nil
	}
	k, err := randomKey()
	if err != nil {
		return nil, err
	}
	printKeyBanner(out, k, cfg.Server.Addr)
	return []string{k}, nil
}

func randomKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate session key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func printKeyBanner(out io.Writer, k, addr string) {
	fmt.Fprintf(out, `
  No session API key is configured, so this one was generated for this run only.
  It is shown here once and never logged:

      %s

  Try it:
      curl -H 'X-Session-API-Key: %s' http://%s/api/conversations/count

  Set auth.keys in config.yaml or SESSION_API_KEY to keep a key across restarts.

`, k, k, addr)
}
