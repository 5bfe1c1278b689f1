// Package load is agent-bench's load generator: the scenarios of the
// benchmark issues, run against one server over loopback WebSockets.
//
//   - Connect: N connections authenticate, receive their first (full_state)
//     frame and close, C at a time; connections per second and the
//     time-to-ready distribution. With a wrong key, rejections per second.
//   - Fanout: S subscribers on one conversation; one of them publishes K
//     messages, back to back or at a fixed rate; delivered messages per
//     second (S*K/elapsed), end-to-end latency from a send timestamp in
//     the payload, and every loss or duplicate.
//   - Idle: N authenticated connections held open; the server's RSS growth
//     per connection, and whether every one of them held.
//   - Churn: connections that connect, send one message, see it come back
//     and leave, at a steady rate for a duration; the error rate, and the
//     server's RSS at the end against the start.
//   - Storm: N clients, each with a JWT of its own, drop their sockets at
//     once while events keep being posted, and come back with after_id
//     after a random delay; the time until every one has resumed, errors
//     by kind, every event delivered once, the server's CPU per reconnect,
//     and a paced fan-out's latency during the storm against before it.
//   - ClusterStorm: the same storm on a cluster, where the drop is the
//     SIGKILL of one node: only its clients reconnect, through the
//     survivors, whose caches never saw their JWTs, while the clients on
//     the survivors keep receiving; posts go over REST, retried with
//     idempotency keys. On one server, a share of the clients drop their
//     sockets instead, for the same-run comparison.
//
// A scenario knows the server only through Server: an address, a way to
// create a conversation, and probes of its memory and CPU. Starting and
// stopping servers is package target's job. Every loop is bounded by a
// count and by the context.
//
// The payload of a published message is its text: "bench:<seq>:<sent>:"
// followed by padding, where sent is nanoseconds on this process's
// monotonic clock. Receivers find it in the MessageEvent by a byte search,
// not a JSON decode, so the generator stays cheaper than the server it
// measures.
package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// Server is the server under load, as the scenarios see it.
type Server struct {
	Addr string // host:port of its HTTP listener

	// NewConversation returns the id of a new conversation to connect to.
	NewConversation func(ctx context.Context) (string, error)

	// Memory reads the server's resident memory; nil when unknown.
	Memory func() (Memory, error)

	// CPU reads the CPU time the server (and its plugins) have used so far;
	// nil when unknown.
	CPU func() (time.Duration, error)

	// Metric reads one series of the server's Prometheus metrics, named
	// as exposed (name{label="value",...}); 0 for a series not exposed
	// yet. Nil when the server has none.
	Metric func(series string) (float64, error)
}

// Memory is a reading of a server's resident memory, in bytes.
type Memory struct {
	RSS  int64 `json:"rss"`  // VmRSS: everything resident, pages of a memory-mapped database file included
	Anon int64 `json:"anon"` // RssAnon: heap, stacks and other anonymous memory, where a leak would show
	File int64 `json:"file"` // RssFile: resident pages of mapped files: the binary and a memory-mapped database
}

// memory reads the server's memory, or zeros when there is no probe.
func memory(srv Server) (Memory, error) {
	if srv.Memory == nil {
		return Memory{}, nil
	}
	m, err := srv.Memory()
	if err != nil {
		return Memory{}, fmt.Errorf("read server memory: %w", err)
	}
	return m, nil
}

// Auth is where a connection puts its credential.
type Auth string

// The credential placements.
const (
	AuthQuery  Auth = "query"  // ?session_api_key=
	AuthHeader Auth = "header" // X-Session-API-Key
	AuthBearer Auth = "bearer" // Authorization: Bearer <key>
	AuthJWT    Auth = "jwt"    // Authorization: Bearer <a distinct HS256 JWT per connection>
)

// ParseAuth checks an Auth name.
func ParseAuth(s string) (Auth, error) {
	switch a := Auth(s); a {
	case AuthQuery, AuthHeader, AuthBearer, AuthJWT:
		return a, nil
	}
	return "", fmt.Errorf("auth %q: want query, header, bearer or jwt", s)
}

// Credentials are what connections authenticate with.
type Credentials struct {
	Auth      Auth
	Key       string // the session API key, for query, header and bearer
	JWTSecret string // the HS256 secret, for jwt
}

func (c Credentials) check() error {
	if c.Auth == AuthJWT {
		if len(c.JWTSecret) < 32 {
			return errors.New("jwt auth needs a secret of at least 32 bytes")
		}
		return nil
	}
	if _, err := ParseAuth(string(c.Auth)); err != nil {
		return err
	}
	if c.Key == "" {
		return errors.New("a key is required")
	}
	return nil
}

// Summary is a latency distribution.
type Summary struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"p50"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// CPUUse is the CPU time spent during a scenario's measured phase, by the
// server (its plugins included) and by this generator. Set against the
// phase's wall time it shows which side was the bottleneck: the two are
// pinned to one core each.
type CPUUse struct {
	Server    time.Duration `json:"server"` // 0 when unknown
	Generator time.Duration `json:"generator"`
}

// cpuMeter measures a CPUUse.
type cpuMeter struct {
	srv          Server
	server, self time.Duration
}

func startCPU(srv Server) cpuMeter {
	m := cpuMeter{srv: srv, self: selfCPU()}
	if srv.CPU != nil {
		m.server, _ = srv.CPU()
	}
	return m
}

// stop returns the CPU used since startCPU.
func (m cpuMeter) stop() CPUUse {
	u := CPUUse{Generator: selfCPU() - m.self}
	if m.srv.CPU != nil {
		if now, err := m.srv.CPU(); err == nil && now >= m.server {
			u.Server = now - m.server
		}
	}
	return u
}

// selfCPU is this process's user plus system time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// errorLog counts a run's errors and keeps the first few texts. It is safe
// for concurrent use.
type errorLog struct {
	mu    sync.Mutex
	count int
	first []string
}

const maxErrorTexts = 5

func (l *errorLog) add(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	if len(l.first) < maxErrorTexts {
		l.first = append(l.first, err.Error())
	}
}

// snapshot returns the count and the first texts.
func (l *errorLog) snapshot() (int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count, append([]string(nil), l.first...)
}
