package browser

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// jwtSecret is the jwt plugin's HS256 secret in the operations test.
const jwtSecret = "operations-test-secret-0123456789abcdef"

// signJWT returns an HS256 token for sub, limited to conversations when
// any are given, valid for an hour.
func signJWT(t *testing.T, sub string, conversations ...string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	claims := map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
	if len(conversations) > 0 {
		claims["conversations"] = conversations
	}
	body, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(body)
	mac := hmac.New(sha256.New, []byte(jwtSecret))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

// operations fetches GET /api/operations with the given header.
func operations(t *testing.T, base, header, value string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/api/operations", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(header, value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

// The operations page, in Chromium, against the real server and plugins:
// a JWT limited to one conversation gets 403 from its endpoint; with the
// key, the page shows every plugin with its state, version, decisions and
// latency, open sockets and conversations, and live charts; when the jwt
// plugin's process dies and cannot come back, its row turns red and the
// page says it is failing, at a glance. No Content-Security-Policy
// violation happens; a screenshot is kept.
func TestOperationsViewInChromium(t *testing.T) {
	exe := chromium(t)
	dir := t.TempDir()
	plugins := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"query", "header", "bearer", "subprotocol", "first_message", "jwt"} {
		b, err := os.ReadFile(filepath.Join(binDir, "plugins", "auth-"+p))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(plugins, "auth-"+p), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg := "auth:\n  keys: ['" + consoleKey + "']\n  chains:\n    rest: [header, jwt]\n" +
		"storage:\n  driver: memory\n" +
		"plugins:\n  dir: " + plugins + "\n  restart: {max_attempts: 2, initial_backoff: 50ms, max_backoff: 100ms}\n" +
		// One jwt process, no standby: killing it is the outage the page shows.
		"  instances:\n    jwt:\n      processes: 1\n      config: {secret: '" + jwtSecret + "'}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logs bytes.Buffer
	srv := startServer(t, cfgPath, "127.0.0.1:0", &logMu, &logs)
	base := "http://" + srv.addr

	// Fleet figures are not one conversation's business.
	if code, body := operations(t, base, "Authorization", "Bearer "+signJWT(t, "scoped", "0f3e0e35-4f4a-4a43-9d4e-2a0bbf6a1f0c")); code != http.StatusForbidden {
		t.Fatalf("a scoped JWT got %d %s from /api/operations, want 403", code, body)
	}
	if code, body := operations(t, base, "Authorization", "Bearer "+signJWT(t, "operator")); code != http.StatusOK {
		t.Fatalf("an unscoped JWT got %d %s, want 200", code, body)
	}
	if code, _ := operations(t, base, "X-Session-API-Key", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("a wrong key got %d, want 401", code)
	}
	resp, err := http.Get(base + "/operations")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "style-src 'self'") {
		t.Fatalf("operations page CSP = %q", csp)
	}

	bctx := newBrowser(t, exe, 3*time.Minute, 1280, 1100)

	poll := func(what, expr string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))(ctx, tg)
			if err != nil {
				return chromedp.Void{}, fmt.Errorf("waiting for %s: %w", what, err)
			}
			return chromedp.Void{}, nil
		}
	}
	// Every CSP violation the page causes is recorded, from before it loads.
	recordViolations := func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `window.cspViolations = []; document.addEventListener("securitypolicyviolation", (e) => window.cspViolations.push(e.violatedDirective + " " + e.blockedURI));`,
		})
		return chromedp.Void{}, err
	}
	fail := func(err error) {
		t.Helper()
		if err != nil {
			shown, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector('#ops').innerText`))
			_, view := operations(t, base, "X-Session-API-Key", consoleKey)
			t.Fatalf("operations page: %v\nthe page shows:\n%s\nthe endpoint answers:\n%s", err, shown, view)
		}
	}

	// Traffic: allows with the key and a JWT, denies with a wrong key.
	for range 3 {
		operations(t, base, "X-Session-API-Key", consoleKey)
		operations(t, base, "Authorization", "Bearer "+signJWT(t, "operator"))
		operations(t, base, "X-Session-API-Key", "wrong")
	}
	fail(chromedp.Do(bctx,
		recordViolations,
		chromedp.Navigate(base+"/operations"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), consoleKey),
		chromedp.Click(chromedp.CSS("#login-button")),
		chromedp.WaitVisible(chromedp.CSS("#ops")),
		poll("every plugin's row", `document.querySelectorAll('#plugins tbody tr').length === 6`),
		poll("the jwt row's allows and latency", `(() => { const r = document.querySelector('#plugins tr[data-plugin="jwt"]'); return r && r.children[4].textContent === '4' && r.children[5].textContent === '1' && r.children[8].textContent.endsWith('ms') && r.children[2].textContent === '1.0.0'; })()`),
		poll("charts with a few points", `document.querySelector('#chart-decisions polyline[data-series="allowed"]').getAttribute('points').split(' ').length >= 3`),
	))
	healthy, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.querySelector('#alert').hidden && document.querySelectorAll('#plugins tr.failing').length === 0`))
	fail(err)
	if !healthy {
		t.Fatal("the page shows a failing plugin before any failed")
	}

	// The jwt plugin's binary goes, and its process dies: it cannot come
	// back, and the JWT requests fail closed meanwhile.
	if err := os.WriteFile(filepath.Join(plugins, "auth-jwt.new"), []byte("not a plugin\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(plugins, "auth-jwt.new"), filepath.Join(plugins, "auth-jwt")); err != nil {
		t.Fatal(err)
	}
	killPlugin(t, srv, "jwt")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(srv.logText(), "plugin restart budget exhausted") {
		if time.Now().After(deadline) {
			t.Fatalf("the jwt plugin was not given up:\n%s", srv.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 4 {
		if code, _ := operations(t, base, "Authorization", "Bearer "+signJWT(t, "operator")); code != http.StatusServiceUnavailable {
			t.Fatalf("a JWT while its plugin is down got %d, want 503", code)
		}
	}
	fail(chromedp.Do(bctx,
		poll("the jwt row in red", `(() => { const r = document.querySelector('#plugins tr[data-plugin="jwt"]'); return r && r.classList.contains('failing') && r.dataset.state === 'failed' && r.children[6].textContent === '4'; })()`),
		poll("the failing banner", `!document.querySelector('#alert').hidden && document.querySelector('#alert').textContent.includes('jwt')`),
		poll("the failing plugin first", `document.querySelector('#plugins tbody tr').dataset.plugin === 'jwt'`),
		poll("the errors on the chart", `document.querySelector('#chart-plugin-errors polyline[data-series="jwt"]').getAttribute('points').split(' ').some((p) => Number(p.split(',')[1]) < 120)`),
	))
	others, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('#plugins tr.failing').length`))
	fail(err)
	if others != 1 {
		t.Errorf("%d plugins shown failing, want only jwt", others)
	}
	violations, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`window.cspViolations`))
	fail(err)
	if len(violations) > 0 {
		t.Errorf("Content-Security-Policy violations: %q", violations)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	fail(err)
	path := filepath.Join(filepath.Dir(artifactPath()), "agent-server-operations.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// killPlugin SIGKILLs the process of plugin, as its start logged it.
func killPlugin(t *testing.T, s *server, plugin string) {
	t.Helper()
	var pid int
	for _, line := range strings.Split(s.logText(), "\n") {
		if strings.Contains(line, `"auth plugin ready"`) && strings.Contains(line, "plugin="+plugin+" ") {
			if i := strings.Index(line, " pid="); i >= 0 {
				fmt.Sscanf(line[i+len(" pid="):], "%d", &pid)
			}
		}
	}
	if pid == 0 {
		t.Fatalf("no pid logged for %s:\n%s", plugin, s.logText())
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
}
