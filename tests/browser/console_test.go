package browser

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/agent-server/agent-server/tests/testbin"
)

// consoleKey is the session API key the test logs in with. It has
// characters that URL and base64 encodings change, so every form of it can
// be looked for.
const consoleKey = "console-Key+/=42"

// chromiumPath returns the path of a chromium binary, or "".
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// chromium returns the path of a chromium binary. Without one the test is
// skipped, except under CI=true, where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	return testbin.Program(t, "chromium", "chromium", "chromium-browser")
}

// artifactPath is where the screenshot is kept: $BROWSER_ARTIFACTS, or the
// system temp directory.
func artifactPath() string {
	dir := os.Getenv("BROWSER_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "agent-server-console.png")
}

// The console, in Chromium, against the real server and plugins: log in,
// create a conversation, see full_state, send a message and see it echoed,
// see another client's event, survive the server being killed and restarted
// by resuming without a duplicate. No request URL and no server log line
// ever holds the key.
func TestConsoleInChromium(t *testing.T) {
	exe := chromium(t)
	began := time.Now()
	phase := func(what string) { t.Logf("%6s  %s", time.Since(began).Round(10*time.Millisecond), what) }

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg := "auth:\n  keys: ['" + consoleKey + "']\n" +
		"storage:\n  path: " + filepath.Join(dir, "data.db") + "\n" +
		"plugins:\n  dir: " + filepath.Join(binDir, "plugins") + "\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logs bytes.Buffer
	srv := startServer(t, cfgPath, "127.0.0.1:0", &logMu, &logs)
	base := "http://" + srv.addr
	phase("server ready")

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("console page CSP = %q", csp)
	}

	bctx := newBrowser(t, exe, 4*time.Minute, 1200, 800) // the whole Chromium flow, on a shared machine

	var netMu sync.Mutex
	var urls []string
	listen := func(ev any) {
		netMu.Lock()
		defer netMu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			urls = append(urls, e.Request.URL)
		case *network.EventWebSocketCreated:
			urls = append(urls, e.URL)
		}
	}
	// The first Run starts the browser and the tab; Listen needs the tab.
	if err := chromedp.Do(bctx, chromedp.Sleep(0)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Listen(bctx, listen); err != nil {
		t.Fatal(err)
	}

	poll := func(what, expr string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
			if err != nil {
				return chromedp.Void{}, fmt.Errorf("waiting for %s: %w", what, err)
			}
			return chromedp.Void{}, nil
		}
	}
	do := func(post func()) chromedp.Action[chromedp.Void] {
		return func(context.Context, *chromedp.Target) (chromedp.Void, error) {
			post()
			return chromedp.Void{}, nil
		}
	}
	messageRows := `[...document.querySelectorAll('#events li[data-kind="MessageEvent"] .text')].map(e => e.textContent)`
	hasMessage := func(text string) string {
		return messageRows + `.includes(` + jsString(text) + `)`
	}
	fail := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("console: %v\nserver log:\n%s", err, srv.logText())
		}
	}

	fail(chromedp.Do(bctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), consoleKey),
		chromedp.Click(chromedp.CSS("#login-button")),
		chromedp.WaitVisible(chromedp.CSS("#app")),
		chromedp.Click(chromedp.CSS("#create")),
		poll("the socket to open and full_state", `document.querySelector('#state').dataset.state === 'open' && Number(document.querySelector('#snapshot').dataset.count) >= 1`),
	))
	phase("logged in, created, socket open with full_state")
	convID, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#title")))
	fail(err)
	fail(chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.CSS("#message"), "hello from chromium"),
		chromedp.Click(chromedp.CSS("#send")),
		poll("the echo of the sent message", hasMessage("hello from chromium")),
	))

	postREST(t, base, convID, "from another client")
	fail(chromedp.Do(bctx, poll("another client's event", hasMessage("from another client"))))

	// Kill the server under the socket, start it again on the same address
	// and store, and post while the console is still reconnecting: it must
	// resume with after_id and show each event exactly once.
	phase("echo and another client's event seen")
	addr := srv.addr
	srv.kill()
	srv = startServer(t, cfgPath, addr, &logMu, &logs)
	phase("server killed and restarted")
	postREST(t, base, convID, "while you were away")
	fail(chromedp.Do(bctx,
		poll("the resumed stream", `Number(document.querySelector('#state').dataset.reconnects) >= 1 && document.querySelector('#state').dataset.state === 'open'`),
		poll("the event posted during the outage", hasMessage("while you were away")),
		do(func() { postREST(t, base, convID, "after the resume") }),
		poll("a live event after the resume", hasMessage("after the resume")),
	))
	phase("resumed; outage and live events seen")
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](messageRows))
	fail(err)
	want := []string{"hello from chromium", "from another client", "while you were away", "after the resume"}
	if strings.Join(rows, "|") != strings.Join(want, "|") {
		t.Fatalf("message rows = %q, want %q (each once, in order)", rows, want)
	}
	dupes, err := chromedp.Run(bctx, chromedp.Evaluate[int](`(() => { const ids = [...document.querySelectorAll('#events li')].map(e => e.dataset.id); return ids.length - new Set(ids).size; })()`))
	fail(err)
	if dupes != 0 {
		t.Fatalf("%d duplicate event rows after the resume", dupes)
	}

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // quality 100 is a PNG
	fail(err)
	if err := os.WriteFile(artifactPath(), shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", artifactPath())

	secrets := []string{consoleKey, url.QueryEscape(consoleKey), url.PathEscape(consoleKey),
		base64.RawURLEncoding.EncodeToString([]byte(consoleKey))}
	netMu.Lock()
	seen := append([]string(nil), urls...)
	netMu.Unlock()
	if len(seen) < 3 {
		t.Fatalf("network log has %d requests; the listener saw nothing", len(seen))
	}
	sawSocket := false
	for _, u := range seen {
		sawSocket = sawSocket || strings.HasPrefix(u, "ws://")
		for _, s := range secrets {
			if strings.Contains(u, s) {
				t.Errorf("request URL %q holds the key", u)
			}
		}
	}
	if !sawSocket {
		t.Errorf("network log has no WebSocket: %q", seen)
	}
	log := srv.logText()
	if !strings.Contains(log, "component=access") {
		t.Errorf("no access log lines in the server log:\n%s", log)
	}
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("the server log holds the key (%d bytes of log)", len(log))
		}
	}
}

// postREST posts a user message to conversation id as a second client.
func postREST(t *testing.T, base, id, text string) {
	t.Helper()
	body := `{"role":"user","content":` + jsString(text) + `}`
	req, err := http.NewRequest("POST", base+"/api/conversations/"+id+"/events", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Session-API-Key", consoleKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("post event: %d", resp.StatusCode)
	}
}

// jsString quotes s as a JavaScript (and JSON) string literal.
func jsString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
