package actors

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/memstore"
)

// BenchmarkConnect measures a cached connect as the actors see it, 50 at
// once like agent-bench's connect scenario: the handshake's chain run (an
// in-process key check), the connection actor's spawn, the attach and its
// full_state frame, then the client's close until the socket is closed,
// over 8 conversations. Run it on one CPU, as agent-bench pins the server:
//
//	go test -run '^$' -bench 'BenchmarkConnect$' -benchmem -cpu 1 ./actors/
func BenchmarkConnect(b *testing.B) {
	st := memstore.New()
	chains := staticChains{core.RouteEvents: mustChain(b, core.RouteEvents, &keyAuth{key: "k"})}
	sys, err := New(Options{Store: st, Chains: chains, Metrics: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sys.Shutdown(context.Background()) })
	var convs []string
	for range 8 {
		c := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle, CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()}
		if _, _, err := sys.CreateConversation(context.Background(), c); err != nil {
			b.Fatal(err)
		}
		convs = append(convs, c.ID)
	}
	one := func(i int) {
		req := &core.Request{Route: core.RouteEvents, Header: http.Header{"X-Test-Key": {"k"}}, PathParams: map[string]string{"conversation_id": convs[i%len(convs)]}}
		res := sys.Authenticate(context.Background(), req)
		if res.Decision != core.Allow {
			b.Fatalf("decision %v", res.Decision)
		}
		tr := &signalTransport{ready: make(chan struct{}), closed: make(chan struct{})}
		c := sys.ConnectSocket(tr, Attach{Principal: res.Principal, Request: sys.Retain(req), ConversationID: convs[i%len(convs)],
			Audit: &core.AuditRecord{Route: core.RouteEvents, RemoteAddr: "127.0.0.1:1", Conversation: convs[i%len(convs)], RequestID: "r"}})
		<-tr.ready
		c.Closed()
		<-tr.closed
	}
	for i := range 100 { // spawn the conversation actors
		one(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				one(i)
			}
		}()
	}
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()
}

// signalTransport closes ready at its first frame and closed at Close.
type signalTransport struct {
	mu            sync.Mutex
	frames        int
	ready, closed chan struct{}
	done          bool
}

func (s *signalTransport) Send([]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	s.frames++
	if s.frames == 1 {
		close(s.ready)
	}
	return true
}

func (s *signalTransport) Close(core.Disconnect) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		s.done = true
		close(s.closed)
	}
}
