package plugins

import (
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// BenchmarkRequestEncoding measures what one uncached JWT handshake costs
// to encode on the host and decode in the plugin, apart from the transport:
//
//   - unary: the AuthenticateRequest protocols 1 and 2 send, whose path
//     parameters, query and headers are protobuf maps;
//   - flat: the Request protocol 3's Stream sends, the same fields with
//     every map as alternating names and values.
func BenchmarkRequestEncoding(b *testing.B) {
	req := &core.Request{Route: core.RouteEvents, Method: "GET", Path: "/sockets/events/6f1e2c1a-8d3b-4c55-9a43-2b7f0d8e9a11",
		PathParams: map[string]string{"conversation_id": "6f1e2c1a-8d3b-4c55-9a43-2b7f0d8e9a11"},
		Header: http.Header{
			"Authorization": {"Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3NjQ1MDAwMDAsInN1YiI6InVzZXItMTIzNDUifQ.mG1a5vJ0tQm8cJ3y5V0p0vZ8xW3kq2sRr4nT6uHhY7A"},
			"User-Agent":    {"agent-bench"},
		},
		RemoteAddr: "127.0.0.1:40000"}
	in := Inputs{Headers: []string{"Authorization"}}
	b.Run("unary", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			raw, err := proto.Marshal(requestToPB(req, in))
			if err != nil {
				b.Fatal(err)
			}
			var pb authpb.AuthenticateRequest
			if err := proto.Unmarshal(raw, &pb); err != nil {
				b.Fatal(err)
			}
			if got := requestFromPB(&pb); got.Header.Get("Authorization") == "" {
				b.Fatal("the header was lost")
			}
		}
	})
	b.Run("flat", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			raw, err := proto.Marshal(&authpb.Call{Id: 1, Request: requestToFlat(req, in), TimeoutMicros: 500_000})
			if err != nil {
				b.Fatal(err)
			}
			var c authpb.Call
			if err := proto.Unmarshal(raw, &c); err != nil {
				b.Fatal(err)
			}
			if got := requestFromFlat(c.GetRequest()); got.Header.Get("Authorization") == "" {
				b.Fatal("the header was lost")
			}
		}
	})
}
