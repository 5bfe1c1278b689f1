package server

import (
	"context"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// pruneAbove is how many addresses the limiter tracks before it sweeps out
// those whose failures have drained.
const pruneAbove = 4096

// addrLimits are the per-address abuse limits. Failed authentications fill
// a leaky bucket that drains auth.failures_per_minute per minute; a full
// bucket answers 429 before any plugin runs, so guessing keys costs the
// server nothing. Unauthenticated first-message sockets are counted, up to
// auth.unauthenticated_per_address at once. Addresses are the remote IP;
// behind a proxy they are the proxy's.
type addrLimits struct {
	perMinute  float64 // 0 disables the failure limit
	maxPending int     // 0 disables the pending cap

	mu       sync.Mutex
	failures map[string]*leak
	pending  map[string]int
}

// leak is one address's failure level at a time.
type leak struct {
	level float64
	at    time.Time
}

func newAddrLimits(a config.Auth) *addrLimits {
	return &addrLimits{
		perMinute:  float64(max(a.FailuresPerMinute, 0)),
		maxPending: max(a.UnauthenticatedPerAddress, 0),
		failures:   make(map[string]*leak),
		pending:    make(map[string]int),
	}
}

// drained returns l's level at now.
func (l *addrLimits) drained(lk *leak, now time.Time) float64 {
	return max(0, lk.level-now.Sub(lk.at).Minutes()*l.perMinute)
}

// blocked reports whether addr has failed too often, and how long to wait.
func (l *addrLimits) blocked(addr string, now time.Time) (time.Duration, bool) {
	if l.perMinute <= 0 {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lk := l.failures[addr]
	if lk == nil {
		return 0, false
	}
	// Blocked while one more failure would overflow the bucket.
	level := l.drained(lk, now)
	if level+1 <= l.perMinute {
		return 0, false
	}
	wait := time.Duration((level + 1 - l.perMinute) / l.perMinute * float64(time.Minute))
	return max(wait, time.Second), true
}

// fail records a failed authentication from addr.
func (l *addrLimits) fail(addr string, now time.Time) {
	if l.perMinute <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) > pruneAbove {
		for a, lk := range l.failures {
			if l.drained(lk, now) == 0 {
				delete(l.failures, a)
			}
		}
	}
	lk := l.failures[addr]
	if lk == nil {
		lk = &leak{}
		l.failures[addr] = lk
	}
	lk.level, lk.at = l.drained(lk, now)+1, now
}

// reserve counts one more unauthenticated socket for addr, or reports
// false when addr is at the cap.
func (l *addrLimits) reserve(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxPending > 0 && l.pending[addr] >= l.maxPending {
		return false
	}
	l.pending[addr]++
	return true
}

// release ends a reservation.
func (l *addrLimits) release(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending[addr] <= 1 {
		delete(l.pending, addr)
		return
	}
	l.pending[addr]--
}

// remoteIP is the address part of r.RemoteAddr.
func remoteIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// refuseTooMany answers 429 with Retry-After, in whole seconds.
func refuseTooMany(w http.ResponseWriter, wait time.Duration, detail string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	refuse(w, http.StatusTooManyRequests, detail)
}

// limitFailures guards an authenticated handler (REST): 429 while the
// client's address is over auth.failures_per_minute, and each 401 it
// answers counts as a failure, as does an authentication error the request
// itself caused (chargeFailure).
func (s *Server) limitFailures(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := remoteIP(r.RemoteAddr)
		if wait, blocked := s.abuse.blocked(addr, time.Now()); blocked {
			s.rateLimited(r, core.RouteREST, "", rateLimitFailures)
			refuseTooMany(w, wait, "Too many failed authentication attempts")
			return
		}
		rec := &statusRecorder{ResponseWriter: w}
		var charged bool
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), chargeKey{}, &charged)))
		if rec.code() == http.StatusUnauthorized || charged {
			s.abuse.fail(addr, time.Now())
		}
	})
}

// chargeKey carries, under limitFailures, the flag chargeFailure sets.
type chargeKey struct{}

// chargeFailure counts the request toward auth.failures_per_minute although
// it is not answered 401: its authentication failed to decide because of
// the request itself (core.Result.RequestFault).
func chargeFailure(ctx context.Context) {
	if charged, ok := ctx.Value(chargeKey{}).(*bool); ok {
		*charged = true
	}
}
