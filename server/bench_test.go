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
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// fanoutSubscribers is how many sockets BenchmarkFanout attaches to one
// conversation.
const fanoutSubscribers = 1000

// BenchmarkFanout publishes events to one conversation with 1,000 subscribed
// gorilla clients on loopback and reports delivered messages per second
// (events x subscribers / elapsed), once with the batched writev path and
// once writing one frame per syscall.
//
//	go test ./server -run '^$' -bench 'BenchmarkFanout$' -benchtime 3000x
func BenchmarkFanout(b *testing.B) {
	for _, mode := range []struct {
		name     string
		perFrame bool
	}{{"writev", false}, {"per-frame", true}} {
		b.Run(mode.name, func(b *testing.B) {
			rig := newFanoutRig(b, mode.perFrame)
			b.ResetTimer()
			elapsed := rig.publish(b, b.N)
			b.StopTimer()
			b.ReportMetric(float64(b.N*fanoutSubscribers)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkFanoutPaired runs both write paths side by side, each on its own
// server with 1,000 subscribers, alternating rounds of 500 events, so both
// see the same machine noise. It reports each path's delivered messages per
// second and their ratio.
//
//	go test ./server -run '^$' -bench 'BenchmarkFanoutPaired' -benchtime 3000x
func BenchmarkFanoutPaired(b *testing.B) {
	const round = 500
	batched, perFrame := newFanoutRig(b, false), newFanoutRig(b, true)
	var tb, tp time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		tb += batched.publish(b, n)
		tp += perFrame.publish(b, n)
	}
	b.StopTimer()
	rb := float64(b.N*fanoutSubscribers) / tb.Seconds()
	rp := float64(b.N*fanoutSubscribers) / tp.Seconds()
	b.ReportMetric(rb, "writev-msgs/s")
	b.ReportMetric(rp, "per-frame-msgs/s")
	b.ReportMetric(rb/rp, "ratio")
	b.ReportMetric(0, "ns/op")
}

// fanoutRig is a server with fanoutSubscribers clients on one conversation,
// each counting the frames it reads.
type fanoutRig struct {
	e         *edge
	id        string
	body      []byte
	delivered atomic.Int64
	published int64
}

func newFanoutRig(b *testing.B, perFrame bool) *fanoutRig {
	b.Helper()
	e := newEdge(b, func(c *config.Config) {
		c.Server.AccessLog = false
		c.Limits.SubscribersPerConversation = fanoutSubscribers
		c.Limits.SendQueueBytes = 64 << 20 // measure throughput, not the slow-consumer policy
	}, func(s *Server) { s.perFrameWrites = perFrame })
	rig := &fanoutRig{e: e, id: e.conversation(b), body: textBody(strings.Repeat("x", 200))}
	var wg sync.WaitGroup
	conns := make([]*websocket.Conn, fanoutSubscribers)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(e.eventsURL(rig.id, ""), http.Header{"X-Session-API-Key": {goodKey}})
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
				rig.delivered.Add(1)
			}
		}()
	}
	b.Cleanup(func() { // runs before newEdge's cleanup shuts the server down
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	return rig
}

// publish posts n events and returns how long until every subscriber had
// read all of them.
func (r *fanoutRig) publish(b *testing.B, n int) time.Duration {
	start := time.Now()
	for range n {
		if _, err := r.e.sys.PostEvent(context.Background(), r.id, core.SourceAgent, core.KindMessage, r.body); err != nil {
			b.Fatal(err)
		}
	}
	r.published += int64(n)
	want := r.published * fanoutSubscribers
	deadline := time.Now().Add(2 * time.Minute)
	for r.delivered.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d", r.delivered.Load(), want)
		}
		time.Sleep(100 * time.Microsecond)
	}
	return time.Since(start)
}

// BenchmarkOutboundSend measures queuing one frame on a socket's outbound
// queue, the conversation actor's whole per-subscriber cost, without
// metrics and with them. Since the queue-depth histogram is observed once
// per write rather than per frame, queuing costs the same either way; the
// write pays one observation and two counter additions for all its frames.
//
//	go test -run '^$' -bench OutboundSend -count 5 ./server/
func BenchmarkOutboundSend(b *testing.B) {
	for _, measured := range []bool{false, true} {
		name := "metrics-off"
		if measured {
			name = "metrics-on"
		}
		b.Run(name, func(b *testing.B) {
			o := newOutbound(discardConn{}, 1<<30, 0)
			if measured {
				m := newServerMetrics(prometheus.NewRegistry(), &Server{}).route(core.RouteEvents)
				o.depth, o.wrote = m.queue, m.wrote
			}
			o.flushing = true // keep the flush goroutine out of the measurement
			payload := []byte(fmt.Sprintf(`{"id":"x","kind":"MessageEvent","text":%q}`, strings.Repeat("x", 200)))
			b.ReportAllocs()
			for i := range b.N {
				if i%1024 == 0 {
					o.cur.reset()
				}
				o.send(payload)
			}
		})
	}
}
