package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The OpenID provider the oidc tests sign in with: zitadel/oidc's example
// server, a real provider built from the Go module proxy and run as its own
// process on loopback. Each start makes a new RSA signing key.
const (
	providerModule = "github.com/zitadel/oidc/v3/example/server@v3.52.0"
	// Its test users and its confidential clients ("web" and "api" share
	// the secret "secret").
	providerUser     = "test-user@localhost"
	providerUser2    = "test-user2"
	providerPassword = "verysecure"
	providerSecret   = "secret"
	// providerRedirect is where the code flow ends; nothing listens there,
	// the test reads the code off the redirect.
	providerRedirect = "http://127.0.0.1:9/callback"
)

// providerBuild builds the provider once per test run, into binDir, with
// go install and GOBIN: it never touches this module's go.mod.
var providerBuild struct {
	once sync.Once
	path string
	err  error
}

func providerBinary(t *testing.T) string {
	t.Helper()
	providerBuild.once.Do(func() {
		dir := filepath.Join(binDir, "oidc-provider")
		cmd := exec.Command("go", "install", providerModule)
		cmd.Dir = os.TempDir() // outside this module: pkg@version ignores it anyway
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			providerBuild.err = fmt.Errorf("go install %s: %v\n%s", providerModule, err, out)
			return
		}
		providerBuild.path = filepath.Join(dir, "server")
	})
	if providerBuild.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(providerBuild.err)
		}
		t.Skipf("cannot build the OpenID provider (it needs the Go module proxy): %v", providerBuild.err)
	}
	return providerBuild.path
}

// provider is one running OpenID provider process.
type provider struct {
	t      *testing.T
	port   int
	cmd    *exec.Cmd
	log    *bytes.Buffer
	exited chan struct{}
}

// issuer is the provider's issuer, as its tokens' iss says.
func (p *provider) issuer() string { return fmt.Sprintf("http://localhost:%d/", p.port) }

// startProvider runs the provider on port (0: a free one) and waits until
// it serves its discovery document.
func startProvider(t *testing.T, port int) *provider {
	t.Helper()
	bin := providerBinary(t)
	if port == 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	p := &provider{t: t, port: port, log: &bytes.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Env = []string{fmt.Sprintf("PORT=%d", port), "REDIRECT_URI=" + providerRedirect}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.issuer() + ".well-known/openid-configuration")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("the OpenID provider exited:\n%s", p.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the OpenID provider did not start within 30s:\n%s", p.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop kills the provider and waits for it to exit.
func (p *provider) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// restart stops the provider and starts it again on the same port, with a
// new signing key.
func (p *provider) restart() *provider {
	p.t.Helper()
	p.stop()
	return startProvider(p.t, p.port)
}

// signIn runs the authorization-code flow as a browser would, with plain
// HTTP requests: authorize, the login form, the callback, then the token
// endpoint with the client's secret. It returns the ID token.
func (p *provider) signIn(t *testing.T, client, user string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	redirect := func(resp *http.Response, err error) *url.URL {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil || resp.StatusCode != http.StatusFound {
			t.Fatalf("%s %s: %s, want a redirect (%v)", resp.Request.Method, resp.Request.URL.Path, resp.Status, err)
		}
		return loc
	}
	q := url.Values{"client_id": {client}, "redirect_uri": {providerRedirect}, "response_type": {"code"},
		"scope": {"openid email profile"}, "state": {"st"}, "nonce": {"n"}}
	login := redirect(c.Get(p.issuer() + "auth?" + q.Encode()))
	id := login.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("authorize redirected to %s, want the login page with an authRequestID", login)
	}
	callback := redirect(c.PostForm(p.issuer()+"login/username", url.Values{"id": {id}, "username": {user}, "password": {providerPassword}}))
	done := redirect(c.Get(callback.String()))
	code := done.Query().Get("code")
	if code == "" || done.Query().Get("state") != "st" {
		t.Fatalf("the flow ended at %s, want the redirect URI with a code and the state", done.Redacted())
	}
	req, _ := http.NewRequest(http.MethodPost, p.issuer()+"oauth/token", strings.NewReader(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {providerRedirect}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, providerSecret)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		IDToken string `json:"id_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.IDToken == "" {
		t.Fatalf("token endpoint: %s, no id_token (%v)", resp.Status, err)
	}
	return tok.IDToken
}

// jwksCounter is a reverse proxy in front of a provider that counts the
// JWKS requests going through it.
type jwksCounter struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newJWKSCounter(t *testing.T, p *provider) *jwksCounter {
	t.Helper()
	target, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", p.port))
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a stopped provider is a 502, on purpose
	c := &jwksCounter{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keys" {
			c.hits.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *jwksCounter) url() string { return c.srv.URL + "/keys" }
