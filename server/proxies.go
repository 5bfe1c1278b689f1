package server

import (
	"net"
	"net/http"
	"strings"

	"github.com/agent-server/agent-server/core/config"
)

// trusted is server.trusted_proxies, parsed.
type trusted []*net.IPNet

func newTrusted(cidrs []string) trusted {
	var t trusted
	for _, c := range cidrs {
		if n, err := config.ParseTrusted(c); err == nil { // validated at load
			t = append(t, n)
		}
	}
	return t
}

func (t trusted) contains(host string) bool {
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, n := range t {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// client returns the address a request came from: the peer, unless the
// peer is a trusted proxy, in which case the right-most address of
// X-Forwarded-For that is not itself a trusted proxy (the left part of
// the header is whatever the client chose to send, and is never believed).
func (t trusted) client(r *http.Request) (string, bool) {
	peer := remoteIP(r.RemoteAddr)
	if len(t) == 0 || !t.contains(peer) {
		return peer, false
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			hop := strings.TrimSpace(parts[j])
			if net.ParseIP(hop) == nil {
				return peer, false // a malformed hop: believe nothing past it
			}
			if !t.contains(hop) {
				return hop, true
			}
		}
	}
	return peer, false
}

// realClient attributes each request from a trusted proxy to the client
// X-Forwarded-For names, by rewriting RemoteAddr before anything reads it:
// the per-address abuse limits, the access log and the authenticators all
// see the client, not the load balancer.
func (s *Server) realClient(next http.Handler) http.Handler {
	if len(s.proxies) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ip, ok := s.proxies.client(r); ok {
			r2 := r.Clone(r.Context())
			r2.RemoteAddr = net.JoinHostPort(ip, "0")
			r = r2
		}
		next.ServeHTTP(w, r)
	})
}
