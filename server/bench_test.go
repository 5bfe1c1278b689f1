package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// fanoutSubscribers is how many sockets BenchmarkFanout attaches to one
// conversation.
const fanoutSubscribers = 1000

// BenchmarkFanout publishes events to one conversation with 1,000 subscribed
// gorilla clients on loopback and reports delivered messages per second
// (events x subscribers / elapsed), once with the batched writev path and
// once writing one frame per syscall, so both figures come from one run.
//
//	go test ./server -run '^$' -bench BenchmarkFanout -benchtime 2000x
func BenchmarkFanout(b *testing.B) {
	for _, mode := range []struct {
		name     string
		perFrame bool
	}{{"writev", false}, {"per-frame", true}} {
		b.Run(mode.name, func(b *testing.B) { benchFanout(b, mode.perFrame) })
	}
}

func benchFanout(b *testing.B, perFrame bool) {
	e := newEdge(b, func(c *config.Config) {
		c.Server.AccessLog = false
		c.Limits.SubscribersPerConversation = fanoutSubscribers
		c.Limits.SendQueueBytes = 64 << 20 // measure throughput, not the slow-consumer policy
	}, func(s *Server) { s.perFrameWrites = perFrame })
	id := e.conversation(b)

	var delivered atomic.Int64
	var wg sync.WaitGroup
	conns := make([]*websocket.Conn, fanoutSubscribers)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(e.eventsURL(id, ""), http.Header{"X-Session-API-Key": {goodKey}})
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		conns[i] = c
		if _, _, err := c.ReadMessage(); err != nil { // full_state
			b.Fatalf("read full_state: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, r, err := c.NextReader()
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, r)
				delivered.Add(1)
			}
		}()
	}
	body := textBody(strings.Repeat("x", 200))

	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := e.sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, body); err != nil {
			b.Fatal(err)
		}
	}
	want := int64(b.N) * fanoutSubscribers
	deadline := time.Now().Add(2 * time.Minute)
	for delivered.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d", delivered.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(want)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")

	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
}

// BenchmarkOutboundSend measures queuing one frame on a socket's outbound
// queue, the conversation actor's whole per-subscriber cost.
func BenchmarkOutboundSend(b *testing.B) {
	o := newOutbound(discardConn{}, 1<<30, 0)
	o.flushing = true // keep the flush goroutine out of the measurement
	payload := []byte(fmt.Sprintf(`{"id":"x","kind":"MessageEvent","text":%q}`, strings.Repeat("x", 200)))
	b.ReportAllocs()
	for i := range b.N {
		if i%1024 == 0 {
			o.cur.reset()
		}
		o.send(payload)
	}
}
