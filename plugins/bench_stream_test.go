package plugins

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// BenchmarkStreamCall measures the per-call cost of protocol 3 apart from
// any plugin's own work: the host's side (requestToFlat, the call, its
// pending entry, the writer, the reader's delivery) and the SDK's side
// (decoding, requestFromFlat, the worker hand-off, the reply) in one
// process over loopback gRPC, the plugin a recorder that allows at once.
// allocs/op counts both sides. Run with -benchmem; callers-1 is one call
// per message, callers-64 batches.
func BenchmarkStreamCall(b *testing.B) {
	benchCallers(b, loopbackStream(b, &recorder{result: core.Allowed(&core.Principal{Subject: "user-12345"})}))
}

// pluginEnd is the plugin's end of a Stream, in the benchmark's process
// and without gRPC: every batch of calls is answered at once, each call
// allowed, through a channel the host's reader receives from.
type pluginEnd struct {
	grpc.ClientStream // not used
	replyQueue
	allow *authpb.AuthenticateResponse
}

func (e *pluginEnd) Send(c *authpb.Calls) error {
	rs := make([]*authpb.Reply, len(c.GetCalls()))
	for k, call := range c.GetCalls() {
		rs[k] = &authpb.Reply{Id: call.GetId(), Response: e.allow}
	}
	e.replyQueue <- &authpb.Replies{Replies: rs}
	return nil
}

// BenchmarkHostCall measures the host's side of one uncached call apart
// from gRPC: requestToFlat, the size check's proto.Size, the call and its
// pending entry, the writer's batching, the reader's delivery and
// resultFromPB. The plugin's end answers in the same process (its replies,
// one Reply per call, count in allocs/op too).
func BenchmarkHostCall(b *testing.B) {
	end := &pluginEnd{replyQueue: make(replyQueue, 64), allow: resultToPB(core.Allowed(&core.Principal{Subject: "user-12345"}))}
	st := newStreamClient(end, func() {}, func() {})
	b.Cleanup(func() { st.close(errors.New("the benchmark is over")) })
	benchCallers(b, st)
}

// benchCallers runs b.N allowed calls through st from 1 and from 64
// callers at once, a sub-benchmark each.
func benchCallers(b *testing.B, st *streamClient) {
	req, in := benchRequest()
	ctx := context.Background()
	for _, conc := range []int{1, 64} {
		b.Run("callers-"+strconv.Itoa(conc), func(b *testing.B) {
			b.ReportAllocs()
			work := make(chan struct{}, 1024)
			var wg sync.WaitGroup
			for range conc {
				wg.Go(func() {
					for range work {
						flat := requestToFlat(req, in)
						res := st.authenticate(ctx, time.Now().Add(10*time.Second), flat, proto.Size(flat), func() {})
						if res.Decision != core.Allow {
							b.Errorf("got %s (%v), want allow", res.Decision, res.Err)
						}
					}
				})
			}
			b.ResetTimer()
			for range b.N {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
		})
	}
}

// hostEnd is the host's end of a Stream, for the SDK's side without gRPC:
// each Recv decodes the next encoded batch of calls, as gRPC would; Send
// counts the replies.
type hostEnd struct {
	grpc.ServerStream // not used
	ctx               context.Context
	batches           chan []byte
	replies           chan int
}

func (e *hostEnd) Context() context.Context { return e.ctx }

func (e *hostEnd) Recv() (*authpb.Calls, error) {
	raw, ok := <-e.batches
	if !ok {
		return nil, io.EOF
	}
	c := &authpb.Calls{}
	if err := proto.Unmarshal(raw, c); err != nil {
		return nil, err
	}
	return c, nil
}

func (e *hostEnd) Send(r *authpb.Replies) error {
	e.replies <- len(r.GetReplies())
	return nil
}

// BenchmarkPluginCall measures the SDK's side of one call apart from gRPC
// and from any plugin's own work (a recorder that allows at once):
// decoding the batch, the batch's deadline, the worker hand-off,
// requestFromFlat, the span, resultToPB and the reply's batching. Calls
// come in batches of 8, as under a storm of 64 callers, each batch once
// the previous one is answered.
func BenchmarkPluginCall(b *testing.B) {
	const perBatch = 8
	req, in := benchRequest()
	calls := &authpb.Calls{}
	for k := range perBatch {
		calls.Calls = append(calls.Calls, &authpb.Call{Id: uint64(k + 1), Request: requestToFlat(req, in), TimeoutMicros: 10_000_000})
	}
	raw, err := proto.Marshal(calls)
	if err != nil {
		b.Fatal(err)
	}
	s := &grpcServer{impl: &recorder{result: core.Allowed(&core.Principal{Subject: "user-12345"})}, log: slog.New(slog.DiscardHandler)}
	end := &hostEnd{ctx: context.Background(), batches: make(chan []byte), replies: make(chan int, perBatch)}
	served := make(chan error, 1)
	go func() { served <- s.Stream(end) }()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += perBatch {
		end.batches <- raw
		for got := 0; got < perBatch; {
			got += <-end.replies
		}
	}
	b.StopTimer()
	close(end.batches)
	if err := <-served; err != nil {
		b.Fatal(err)
	}
}

// benchRequest is an uncached JWT handshake and the jwt plugin's inputs.
func benchRequest() (*core.Request, Inputs) {
	return &core.Request{Route: core.RouteEvents, Method: "GET", Path: "/sockets/events/6f1e2c1a-8d3b-4c55-9a43-2b7f0d8e9a11",
		PathParams: map[string]string{"conversation_id": "6f1e2c1a-8d3b-4c55-9a43-2b7f0d8e9a11"},
		Header: http.Header{
			"Authorization": {"Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3NjQ1MDAwMDAsInN1YiI6InVzZXItMTIzNDUifQ.mG1a5vJ0tQm8cJ3y5V0p0vZ8xW3kq2sRr4nT6uHhY7A"},
			"User-Agent":    {"agent-bench"},
		},
		RemoteAddr: "127.0.0.1:40000"}, Inputs{Headers: []string{"Authorization"}}
}
