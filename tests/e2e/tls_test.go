package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/tests/testcert"
)

// startServerTLS is startServer for a config with server.tls; clientTLS is
// what the harness's clients use (the server's CA, maybe a certificate).
func startServerTLS(t *testing.T, cfg string, clientTLS *tls.Config) *server {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(withPluginDir(cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	return launchWith(t, dir, path, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "AGENT_SERVER_AUTH__RPC_TIMEOUT=10s"}, clientTLS)
}

// presenting is a client TLS config that trusts roots and presents cert
// whatever CAs the server names (nil: no certificate).
func presenting(roots *x509.CertPool, cert *testcert.Leaf) *tls.Config {
	c := &tls.Config{RootCAs: roots}
	if cert != nil {
		tc := cert.TLS()
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc, nil }
	}
	return c
}

// dialTLS opens a socket with its own TLS config; a failed TLS handshake
// gives a nil response.
func dialTLS(t *testing.T, s *server, path string, cfg *tls.Config, h http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: cfg}
	c, resp, err := d.Dial(s.wsURL(path), h)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

// createConversationID creates the conversation id through REST.
func (s *server) createConversationID(t *testing.T, id string) {
	t.Helper()
	code, body := s.request(t, "POST", "/api/conversations", map[string]any{"conversation_id": id, "agent": map[string]any{"kind": "test"}}, "X-Session-API-Key", key)
	if code != http.StatusCreated {
		t.Fatalf("create conversation %s: %d %s", id, code, body)
	}
}

// WSS end to end: the certificate files are replaced while a socket is
// open; new handshakes get the new certificate and the old socket stays.
func TestTLSCertificateRotationKeepsSockets(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "server-ca")
	certFile, keyFile := ca.Server(t).Write(t, dir, "server")
	s := startServerTLS(t, keyCfg()+"server:\n  tls:\n    cert_file: "+certFile+"\n    key_file: "+keyFile+"\n", &tls.Config{RootCAs: ca.Pool()})
	conv := s.createConversation(t, key)
	served := func(c *websocket.Conn) *x509.Certificate {
		return c.UnderlyingConn().(*tls.Conn).ConnectionState().PeerCertificates[0]
	}
	old, resp, err := s.dial(t, "/sockets/events/"+conv, hdr("X-Session-API-Key", key))
	if err != nil {
		t.Fatalf("wss dial: %v (%d)", err, status(resp))
	}
	mustReady(t, old)
	first := served(old)

	renewed := ca.Server(t)
	renewed.Write(t, dir, "server") // certificate, then key, each replaced atomically
	fresh, resp, err := s.dial(t, "/sockets/events/"+conv, hdr("X-Session-API-Key", key))
	if err != nil {
		t.Fatalf("wss dial after the rotation: %v (%d)", err, status(resp))
	}
	mustReady(t, fresh)
	if got := served(fresh); !got.Equal(renewed.Cert) || got.Equal(first) {
		t.Errorf("a new handshake got serial %v, want the renewed %v", got.SerialNumber, renewed.Cert.SerialNumber)
	}
	send(t, fresh, map[string]string{"role": "user", "content": "after the rotation"})
	for {
		e, err := read(t, old, 10*time.Second)
		if err != nil {
			t.Fatalf("the socket opened before the rotation: %v", err)
		}
		if e.Kind == "MessageEvent" && e.text() == "after the rotation" {
			break
		}
	}
	s.waitLog(t, "TLS files reloaded", 5*time.Second)
}

// client_auth: require with the mtls plugin: certificates map to principals
// and scopes; no certificate, or one from another CA, fails the TLS
// handshake (logged with the remote address); a socket closes with 4001 at
// its certificate's NotAfter.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, strangerCA := testcert.NewCA(t, "server-ca"), testcert.NewCA(t, "client-ca"), testcert.NewCA(t, "stranger-ca")
	certFile, keyFile := serverCA.Server(t).Write(t, dir, "server")
	admin := clientCA.Issue(t, testcert.Spec{CommonName: "admin", Client: true})
	convA, convB := uuid.NewString(), uuid.NewString()
	s := startServerTLS(t, keyCfg()+`  chains:
    events: [mtls, header]
    rest: [header]
server:
  tls:
    cert_file: `+certFile+`
    key_file: `+keyFile+`
    client_ca_file: `+clientCA.WriteCA(t, dir, "clients.pem")+`
    client_auth: require
plugins:
  instances:
    mtls:
      config:
        rules:
          - uri: spiffe://example.org/agent/*
            scopes: [`+convA+`]
          - cn: ops-*
log:
  level: debug
`, presenting(serverCA.Pool(), admin))
	s.createConversationID(t, convA)
	s.createConversationID(t, convB)
	roots := serverCA.Pool()
	leaf := func(ca *testcert.CA, spec testcert.Spec) *testcert.Leaf {
		spec.Client = true
		return ca.Issue(t, spec)
	}
	agent := leaf(clientCA, testcert.Spec{CommonName: "builder", URIs: []string{"spiffe://example.org/agent/builder"}})
	ops := leaf(clientCA, testcert.Spec{CommonName: "ops-alice"})
	for _, tc := range []struct {
		name string
		cert *testcert.Leaf
		conv string
		want int // 0: the TLS handshake fails
	}{
		{"SPIFFE ID, its conversation", agent, convA, 101},
		{"SPIFFE ID, another conversation", agent, convB, 403},
		{"ops CN, any conversation", ops, convB, 101},
		{"a certificate no rule admits", leaf(clientCA, testcert.Spec{CommonName: "guest"}), convA, 401},
		{"no certificate", nil, convA, 0},
		{"a certificate from another CA", leaf(strangerCA, testcert.Spec{CommonName: "ops-mallory"}), convA, 0},
	} {
		c, resp, err := dialTLS(t, s, "/sockets/events/"+tc.conv, presenting(roots, tc.cert), nil)
		switch {
		case tc.want == 0:
			if err == nil || resp != nil {
				t.Errorf("%s: err %v, status %d; want a failed TLS handshake", tc.name, err, status(resp))
			}
		case tc.want == 101:
			if err != nil {
				t.Errorf("%s: %v (%d), want 101", tc.name, err, status(resp))
				continue
			}
			mustReady(t, c)
		default:
			if status(resp) != tc.want {
				t.Errorf("%s: %d, want %d", tc.name, status(resp), tc.want)
			}
		}
	}
	s.waitLog(t, `msg="TLS handshake refused" component=server remote=127.0.0.1:`, 5*time.Second)
	if !strings.Contains(s.Log(), "authenticator=mtls subject=spiffe://example.org/agent/builder") {
		t.Errorf("the allow by mtls was not logged with its subject")
	}

	// A socket authenticated by a certificate closes when it expires.
	brief := leaf(clientCA, testcert.Spec{CommonName: "ops-brief", NotAfter: time.Now().Add(3 * time.Second)})
	c, resp, err := dialTLS(t, s, "/sockets/events/"+convA, presenting(roots, brief), nil)
	if err != nil {
		t.Fatalf("short-lived certificate: %v (%d)", err, status(resp))
	}
	mustReady(t, c)
	if code, text := closeCode(t, c, 10*time.Second); code != 4001 || text != "Credential expired" {
		t.Errorf("at the certificate's NotAfter: close %d %q, want 4001 \"Credential expired\"", code, text)
	}
}
