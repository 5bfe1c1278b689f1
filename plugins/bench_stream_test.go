package plugins

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := newGRPCServer(nil)
	rec := &recorder{result: core.Allowed(&core.Principal{Subject: "user-12345"})}
	authpb.RegisterAuthenticatorServer(s, &grpcServer{impl: rec, log: slog.New(slog.DiscardHandler)})
	go s.Serve(lis)
	b.Cleanup(s.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	st, err := openStream(authpb.NewAuthenticatorClient(cc), func() {})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.close(errors.New("the benchmark is over")) })
	req := &core.Request{Route: core.RouteEvents, Method: "GET", Path: "/sockets/events/6f1e2c1a-8d3b-4c55-9a43-2b7f0d8e9a11",
		PathParams: map[string]string{"conversation_id": "6f1e2c1a-8d3b-4c55-9a43-2b7f0d8e9a11"},
		Header: http.Header{
			"Authorization": {"Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3NjQ1MDAwMDAsInN1YiI6InVzZXItMTIzNDUifQ.mG1a5vJ0tQm8cJ3y5V0p0vZ8xW3kq2sRr4nT6uHhY7A"},
			"User-Agent":    {"agent-bench"},
		},
		RemoteAddr: "127.0.0.1:40000"}
	in := Inputs{Headers: []string{"Authorization"}}
	ctx := context.Background()
	for _, conc := range []int{1, 64} {
		b.Run(map[int]string{1: "callers-1", 64: "callers-64"}[conc], func(b *testing.B) {
			b.ReportAllocs()
			var next sync.WaitGroup
			work := make(chan struct{}, 1024)
			for range conc {
				next.Go(func() {
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
			next.Wait()
		})
	}
}
