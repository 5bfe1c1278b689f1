package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/agent-server/agent-server/core/config"
)

// TLS on the edge (server.tls): the listener completes each TLS handshake
// itself, in its own goroutine, before net/http sees the connection, so a
// refused handshake, which leaves no request, no access-log line and no
// audit record behind, is still counted and logged.
const (
	// handshakeTimeout bounds a TLS handshake; a client that stalls longer
	// is refused.
	handshakeTimeout = readHeaderTimeout
	// refusedLogEvery and refusedLogBurst bound the info lines about
	// refused handshakes; the rest are counted and reported as suppressed.
	refusedLogEvery = time.Second
	refusedLogBurst = 5
)

// tlsEdge is the server's TLS: certificates and client CAs reloaded from
// their files when they change, the client certificate policy, and the
// count of refused handshakes.
type tlsEdge struct {
	log     *slog.Logger
	config  *tls.Config
	cert    *fileReloader[*tls.Certificate]
	cas     *fileReloader[*x509.CertPool] // nil without client certificates
	refused atomic.Uint64                 // handshakes refused, for metrics

	limit      *rate.Limiter // info lines about refused handshakes
	suppressed atomic.Int64  // refused handshakes not logged since the last line
}

// newTLSEdge loads the certificate (and client CAs) named by cfg; an
// unreadable or mismatched file fails with an error naming its key.
func newTLSEdge(cfg config.TLS, log *slog.Logger) (*tlsEdge, error) {
	e := &tlsEdge{log: log, limit: rate.NewLimiter(rate.Every(refusedLogEvery), refusedLogBurst)}
	var err error
	e.cert, err = newFileReloader(log, "server.tls.cert_file and server.tls.key_file", func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		return &c, err
	}, cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	e.config = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// No h2: WebSockets over HTTP/2 (RFC 8441) are not served.
		NextProtos:     []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return e.cert.get(), nil },
	}
	switch cfg.ClientAuth {
	case config.ClientAuthRequest:
		e.config.ClientAuth = tls.VerifyClientCertIfGiven
	case config.ClientAuthRequire:
		e.config.ClientAuth = tls.RequireAndVerifyClientCert
	default:
		return e, nil
	}
	e.cas, err = newFileReloader(log, "server.tls.client_ca_file", func() (*x509.CertPool, error) {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("no PEM certificate in it")
		}
		return pool, nil
	}, cfg.ClientCAFile)
	if err != nil {
		return nil, err
	}
	base := e.config
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = e.cas.get()
		return c, nil
	}
	return e, nil
}

// listen wraps ln: Accept returns only connections whose TLS handshake
// succeeded, each completed off the accept loop.
func (e *tlsEdge) listen(ln net.Listener) net.Listener {
	var l *handoffListener
	l = newHandoffListener(ln, e.log, goStep, func(raw net.Conn) { e.handshake(l, raw) })
	l.start()
	return l
}

// handshake completes raw's TLS handshake and passes the connection to l,
// or refuses it.
func (e *tlsEdge) handshake(l *handoffListener, raw net.Conn) {
	conn := tls.Server(raw, e.config)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	err := conn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		e.refuse(raw.RemoteAddr(), err)
		_ = raw.Close()
		return
	}
	l.pass(conn)
}

// refuse counts a failed handshake and logs it at info level with the
// remote address, within the log rate limit.
func (e *tlsEdge) refuse(remote net.Addr, err error) {
	e.refused.Add(1)
	if !e.limit.Allow() {
		e.suppressed.Add(1)
		return
	}
	e.log.Info("TLS handshake refused", "remote", remote.String(), "err", err, "suppressed", e.suppressed.Swap(0))
}

// fileReloader holds a value loaded from files and loads it again when one
// of them changes (its modification time or size), checked on every get.
// A load that fails keeps the previous value and is logged once; it is
// tried again when the files change again (the second half of a pair
// being written).
type fileReloader[T any] struct {
	log   *slog.Logger
	what  string // the config keys, for messages
	files []string
	load  func() (T, error)

	mu    sync.Mutex
	val   T
	stamp string
}

func newFileReloader[T any](log *slog.Logger, what string, load func() (T, error), files ...string) (*fileReloader[T], error) {
	r := &fileReloader[T]{log: log, what: what, files: files, load: load}
	r.stamp = r.fingerprint()
	v, err := load()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	r.val = v
	return r, nil
}

// get returns the current value, reloading it first if a file changed.
func (r *fileReloader[T]) get() T {
	stamp := r.fingerprint()
	r.mu.Lock()
	defer r.mu.Unlock()
	if stamp == r.stamp {
		return r.val
	}
	r.stamp = stamp
	v, err := r.load()
	if err != nil {
		r.log.Warn("reloading TLS files failed; the previous ones stay in use", "keys", r.what, "err", err)
		return r.val
	}
	r.val = v
	r.log.Info("TLS files reloaded", "keys", r.what)
	return r.val
}

// fingerprint sums up the files' modification times and sizes.
func (r *fileReloader[T]) fingerprint() string {
	var b []byte
	for _, f := range r.files {
		st, err := os.Stat(f)
		if err != nil {
			b = fmt.Appendf(b, "%s:missing;", f)
			continue
		}
		b = fmt.Appendf(b, "%s:%d:%d;", f, st.ModTime().UnixNano(), st.Size())
	}
	return string(b)
}

// clientCertificates returns the client certificate chain r's TLS
// handshake verified, leaf first, or nil. An unverified certificate (none
// is accepted by the handshake anyway) is never returned.
func clientCertificates(r *http.Request) []*x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0]
}

// TLSHandshakesRefused returns how many TLS handshakes the server refused
// (no client certificate under require, one from an unknown CA, a client
// that gave up or spoke something else): the counter metrics read.
func (s *Server) TLSHandshakesRefused() uint64 {
	if s.tls == nil {
		return 0
	}
	return s.tls.refused.Load()
}
