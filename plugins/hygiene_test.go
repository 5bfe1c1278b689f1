package plugins_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
)

// TestNoSecretInLogsOrResults captures every log record, at debug level,
// while plugins start, allow, deny and fail, and checks that no key, no
// wrong candidate key and no JWT secret appears in it or in any result.
func TestNoSecretInLogsOrResults(t *testing.T) {
	const (
		key       = "Sup3r-S3cret-Key+value"
		wrongKey  = "Wr0ng-Cand1date-Key"
		jwtSecret = "jwt-S3cret-that-is-at-least-32-bytes-long"
	)
	secrets := []string{key, wrongKey, jwtSecret}
	for _, cache := range []bool{false, true} {
		log, logs := newLogger()
		cfg := testConfig(t, cache)
		cfg.Auth.Keys = []string{key}
		cfg.Auth.Chains.REST = []string{"jwt", "header", "bearer"}
		cfg.Plugins.Instances = map[string]config.Plugin{"jwt": {Config: map[string]any{"secret": jwtSecret}}}
		h := plugins.NewHost(cfg, log)
		if err := h.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		var results []core.Result
		for _, route := range []core.Route{core.RouteEvents, core.RouteREST} {
			c := chain(t, h, route)
			for _, k := range []string{key, wrongKey, ""} {
				for _, req := range []*core.Request{
					request("session_api_key=" + k),
					request("", "X-Session-API-Key", k),
					request("", "Authorization", "Bearer "+k),
					request("", "Authorization", "Bearer a.b."+k),
				} {
					req.Route = route
					results = append(results, c.Authenticate(context.Background(), req))
				}
			}
		}
		h.Reload(context.Background(), cfg)
		h.Close()

		// A boot that fails on a bad plugin config must not echo the config.
		bad := cfg
		bad.Plugins.Instances = map[string]config.Plugin{"jwt": {Config: map[string]any{"secret": jwtSecret, "typo": jwtSecret}}}
		bh := plugins.NewHost(bad, log)
		err := bh.Start(context.Background())
		bh.Close()
		if err == nil {
			t.Fatal("bad config started")
		}

		out := logs.String()
		if !strings.Contains(out, "auth plugin ready") {
			t.Fatalf("log capture looks empty:\n%s", out)
		}
		var texts []string
		for _, r := range results {
			texts = append(texts, fmt.Sprintf("%+v %v", r, r.Err))
			if r.Principal != nil {
				texts = append(texts, fmt.Sprintf("%+v", *r.Principal))
			}
		}
		texts = append(texts, out, err.Error())
		for _, s := range secrets {
			for _, text := range texts {
				if strings.Contains(text, s) {
					t.Errorf("cache=%v: secret %q leaked into:\n%s", cache, s, text)
				}
			}
		}
	}
}
