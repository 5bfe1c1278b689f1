package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/tests/testcert"
)

// certAuth allows a request that carries a verified client certificate,
// as its common name, and otherwise defers to sessionKeyAuth.
type certAuth struct{}

func (certAuth) Name() string { return "cert" }

func (certAuth) Authenticate(ctx context.Context, req *core.Request) core.Result {
	if len(req.ClientCertificates) > 0 {
		return core.Allowed(&core.Principal{Subject: "cn:" + req.ClientCertificates[0].Subject.CommonName})
	}
	return sessionKeyAuth{}.Authenticate(ctx, req)
}

// tlsEdgeT is an edge serving HTTPS through Server.Serve, with its
// certificate files in dir.
type tlsEdgeT struct {
	*edge
	addr string
	ca   *testcert.CA // signs the server's certificates
	dir  string
}

// startTLS writes a server certificate signed by a new CA and serves TLS
// with it; mutate adjusts server.tls (the files are already set).
func startTLS(t *testing.T, mutate func(dir string, c *config.TLS)) *tlsEdgeT {
	t.Helper()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "server-ca")
	certFile, keyFile := ca.Server(t).Write(t, dir, "server")
	cfg := config.Default()
	cfg.Limits.PingInterval = 0
	cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile = certFile, keyFile
	if mutate != nil {
		mutate(dir, &cfg.Server.TLS)
	}
	if err := cfg.Validate(); err != nil && !strings.Contains(err.Error(), "ping_interval") {
		t.Fatal(err) // pings are off in these tests, which Validate refuses
	}
	e := buildEdge(t, cfg, certAuth{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &tlsEdgeT{edge: e, addr: ln.Addr().String(), ca: ca, dir: dir}
}

// dialer trusts the server's CA and presents the first of certs, if any,
// whichever CAs the server asks for (Go's client would otherwise send no
// certificate rather than one from a CA the server did not name).
func (e *tlsEdgeT) dialer(certs ...tls.Certificate) *websocket.Dialer {
	cfg := &tls.Config{RootCAs: e.ca.Pool()}
	if len(certs) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
	}
	return &websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: cfg}
}

func (e *tlsEdgeT) wss(id string) string { return "wss://" + e.addr + "/sockets/events/" + id }

// dialTLS opens a socket and reads full_state; it returns the conn and the
// certificate the server presented.
func (e *tlsEdgeT) dialTLS(t *testing.T, id string, h http.Header, certs ...tls.Certificate) (*websocket.Conn, *x509.Certificate) {
	t.Helper()
	c, resp, err := e.dialer(certs...).Dial(e.wss(id), h)
	if err != nil {
		t.Fatalf("dial: %v (status %v)", err, statusOf(resp))
	}
	t.Cleanup(func() { c.Close() })
	if f := readFrame(t, c); f["key"] != core.StateKeyFullState {
		t.Fatalf("first frame = %v, want full_state", f)
	}
	return c, c.UnderlyingConn().(*tls.Conn).ConnectionState().PeerCertificates[0]
}

// WSS end to end; new certificate files are picked up by new handshakes
// while open sockets stay up, and a half-written pair is ignored.
func TestTLSCertificateRotation(t *testing.T) {
	e := startTLS(t, nil)
	id := e.conversation(t)
	key := http.Header{"X-Session-API-Key": {goodKey}}
	old, first := e.dialTLS(t, id, key)

	// Renewal by the same CA: the certificate first, the key a little later.
	renewed := e.ca.Server(t)
	certPEM, keyPEM := renewed.Write(t, t.TempDir(), "renewed")
	cb, _ := os.ReadFile(certPEM)
	kb, _ := os.ReadFile(keyPEM)
	replace := func(name string, b []byte) {
		tmp := filepath.Join(e.dir, name+".tmp")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	replace("server.crt", cb)
	_, half := e.dialTLS(t, id, key)
	if !half.Equal(first) {
		t.Error("a half-written pair replaced the certificate")
	}
	if !strings.Contains(e.logs.String(), "reloading TLS files failed") {
		t.Error("the half-written pair was not logged")
	}
	replace("server.key", kb)
	_, second := e.dialTLS(t, id, key)
	if !second.Equal(renewed.Cert) {
		t.Errorf("new handshake got serial %v, want the renewed %v", second.SerialNumber, renewed.Cert.SerialNumber)
	}

	// The socket opened before the rotation still carries events.
	e.post(t, id, "after rotation")
	if f := readFrame(t, old); f["kind"] != core.KindMessage {
		t.Errorf("old socket got %v, want the message", f)
	}
}

func TestClientCertificates(t *testing.T) {
	clientCA := testcert.NewCA(t, "client-ca")
	strangerCA := testcert.NewCA(t, "stranger-ca")
	good := clientCA.Issue(t, testcert.Spec{CommonName: "svc-a", Client: true}).TLS()
	stranger := strangerCA.Issue(t, testcert.Spec{CommonName: "svc-a", Client: true}).TLS()
	key := http.Header{"X-Session-API-Key": {goodKey}}

	for _, mode := range []string{config.ClientAuthRequest, config.ClientAuthRequire} {
		t.Run(mode, func(t *testing.T) {
			e := startTLS(t, func(dir string, c *config.TLS) {
				c.ClientAuth = mode
				c.ClientCAFile = clientCA.WriteCA(t, dir, "clients.pem")
			})
			id := e.conversation(t)
			// A verified certificate reaches the chain.
			c, _ := e.dialTLS(t, id, nil, good)
			c.Close()
			if !strings.Contains(e.logs.String(), `"subject":"cn:svc-a"`) {
				t.Errorf("the chain did not see the verified certificate:\n%s", e.logs)
			}
			// A certificate from another CA fails the handshake: no HTTP
			// response at all, and the chain never runs.
			before := e.srv.TLSHandshakesRefused()
			if _, resp, err := e.dialer(stranger).Dial(e.wss(id), key); err == nil || resp != nil {
				t.Errorf("certificate from another CA: err %v, response %v; want a failed handshake", err, statusOf(resp))
			}
			// No certificate: fine under request (the key authenticates),
			// refused under require.
			_, resp, err := e.dialer().Dial(e.wss(id), key)
			if mode == config.ClientAuthRequest && err != nil {
				t.Errorf("no certificate under request: %v (status %v)", err, statusOf(resp))
			}
			if mode == config.ClientAuthRequire && (err == nil || resp != nil) {
				t.Errorf("no certificate under require: err %v, response %v; want a failed handshake", err, statusOf(resp))
			}
			want := before + 1
			if mode == config.ClientAuthRequire {
				want++
			}
			waitFor(t, func() bool { return e.srv.TLSHandshakesRefused() == want }, "refused handshakes counted")
			if got := e.logs.String(); !strings.Contains(got, `"msg":"TLS handshake refused","remote":"127.0.0.1:`) {
				t.Errorf("refused handshake not logged with its remote address:\n%s", got)
			}
		})
	}
}

// Refused handshakes are all counted, but a flood of them logs only a few
// lines, the next one saying how many were left out.
func TestRefusedHandshakeLogIsRateLimited(t *testing.T) {
	e := startTLS(t, func(dir string, c *config.TLS) {
		c.ClientAuth = config.ClientAuthRequire
		c.ClientCAFile = testcert.NewCA(t, "client-ca").WriteCA(t, dir, "clients.pem")
	})
	const n = 40
	for range n {
		conn, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: e.ca.Pool()})
		if err == nil {
			// TLS 1.3: the refusal arrives with the first read.
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Read(make([]byte, 1))
			conn.Close()
		}
	}
	waitFor(t, func() bool { return e.srv.TLSHandshakesRefused() == n }, "all refused handshakes counted")
	lines := strings.Count(e.logs.String(), "TLS handshake refused")
	if lines < 1 || lines > refusedLogBurst+2 {
		t.Errorf("%d log lines for %d refused handshakes, want at most about %d", lines, n, refusedLogBurst)
	}
}

func TestNewTLSEdgeErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "ca")
	certFile, keyFile := ca.Server(t).Write(t, dir, "a")
	_, otherKey := ca.Server(t).Write(t, dir, "b")
	tests := []struct {
		name string
		cfg  config.TLS
		want string
	}{
		{"missing cert", config.TLS{CertFile: filepath.Join(dir, "nope.crt"), KeyFile: keyFile}, "server.tls.cert_file"},
		{"mismatched key", config.TLS{CertFile: certFile, KeyFile: otherKey}, "server.tls.cert_file and server.tls.key_file"},
		{"client CAs not PEM", config.TLS{CertFile: certFile, KeyFile: keyFile, ClientAuth: config.ClientAuthRequire, ClientCAFile: keyFile}, "server.tls.client_ca_file"},
	}
	for _, tc := range tests {
		_, err := newTLSEdge(tc.cfg, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %s", tc.name, err, tc.want)
		}
	}
	// Without TLS there is nothing to count.
	if n := newEdge(t, nil).srv.TLSHandshakesRefused(); n != 0 {
		t.Errorf("plain HTTP server counted %d refused handshakes", n)
	}
	if clientCertificates(&http.Request{}) != nil {
		t.Error("a plain request has client certificates")
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
