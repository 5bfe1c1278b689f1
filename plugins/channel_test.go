package plugins

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// What a framer reads from the bytes on the wire: a frame round-trips,
// anything else is a malformed frame (a protocol fault on the host) or an
// end of the channel, told apart by where it falls.
func TestFramerRead(t *testing.T) {
	calls := &authpb.Calls{Calls: []*authpb.Call{{Id: 7, TimeoutMicros: 1000, Request: &authpb.Request{Route: "events", Header: []string{"X-Key", "v"}}}}}
	good, err := proto.Marshal(calls)
	if err != nil {
		t.Fatal(err)
	}
	frame := func(n uint32, body []byte) []byte {
		return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, body...)
	}
	for _, tc := range []struct {
		name    string
		wire    []byte
		want    error  // errors.Is
		wantMsg string // a part of the error
	}{
		{name: "a frame", wire: frame(uint32(len(good)), good)},
		{name: "an empty message", wire: frame(0, nil)},
		{name: "closed between frames", wire: nil, want: io.EOF},
		{name: "closed inside the header", wire: []byte{0, 0}, want: io.ErrUnexpectedEOF},
		{name: "closed right after the header", wire: frame(100, nil), want: io.ErrUnexpectedEOF},
		{name: "closed inside the body", wire: frame(100, good[:3]), want: io.ErrUnexpectedEOF},
		{name: "a length over the bound", wire: frame(maxFrameBytes+1, nil), want: errFrame, wantMsg: "over the channel's"},
		{name: "bytes that do not decode", wire: frame(4, []byte{0xff, 0xff, 0xff, 0xff}), want: errFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			go func() {
				b.Write(tc.wire)
				b.Close()
			}()
			got := &authpb.Calls{}
			err := newFramer(a).read(got)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if len(tc.wire) > 4 && !proto.Equal(got, calls) {
					t.Errorf("read %v, want %v", got, calls)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(errString(err), tc.wantMsg) {
				t.Errorf("read: %v, want %v with %q", err, tc.want, tc.wantMsg)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Frames written by one end are read by the other, in order and intact,
// the read buffer reused between frames (a smaller frame after a larger
// one lands in the same buffer): every message decoded is kept and
// checked after the last read, so one that shared the reused buffer
// would show as changed.
func TestFramerRoundTrip(t *testing.T) {
	a, b := socketPair(t)
	w, r := newFramer(a), newFramer(b)
	sizes := []int{100, 10, 70 << 10, 3, 1 << 20, 5, 40}
	body := func(k, n int) string { return strings.Repeat(string(rune('a'+k)), n) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k, n := range sizes {
			if err := w.write(&authpb.Replies{Replies: []*authpb.Reply{{Id: uint64(k + 1), Response: &authpb.AuthenticateResponse{Error: body(k, n)}}}}); err != nil {
				t.Errorf("write %d: %v", k, err)
				return
			}
		}
	}()
	got := make([]*authpb.Replies, len(sizes))
	for k := range sizes {
		got[k] = &authpb.Replies{}
		if err := r.read(got[k]); err != nil {
			t.Fatalf("read %d: %v", k, err)
		}
	}
	<-done
	for k, n := range sizes {
		if rs := got[k].GetReplies(); len(rs) != 1 || rs[0].GetId() != uint64(k+1) || rs[0].GetResponse().GetError() != body(k, n) {
			t.Errorf("frame %d: got %d replies, id %d, %d bytes, want id %d and %d bytes of %q", k, len(rs), rs[0].GetId(), len(rs[0].GetResponse().GetError()), k+1, n, body(k, 1))
		}
	}
	if cap(w.out) > keepFrameBytes || cap(r.in) > keepFrameBytes {
		t.Errorf("buffers kept after a 1 MiB frame: %d to write, %d to read; want at most %d", cap(w.out), cap(r.in), keepFrameBytes)
	}
}

// The host tells a malformed frame from the plugin as a protocol fault.
func TestHostChannelMalformedFrameIsAProtocolFault(t *testing.T) {
	a, b := net.Pipe()
	go func() {
		b.Write([]byte{0, 0, 0, 2, 0xff, 0xff})
		b.Close()
	}()
	_, err := hostChannel{f: newFramer(a)}.Recv()
	if !errors.Is(err, errProtocol) {
		t.Fatalf("Recv: %v, want a protocol fault", err)
	}
}

// socketPair is a channel's two ends as the host makes them.
func socketPair(t *testing.T) (host, plugin net.Conn) {
	t.Helper()
	hf, pf, err := newChannel()
	if err != nil {
		t.Skipf("no channels here: %v", err)
	}
	defer hf.Close() // FileConn dups them
	defer pf.Close()
	if host, err = net.FileConn(hf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	if plugin, err = net.FileConn(pf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plugin.Close() })
	return host, plugin
}

// channelStream is the host's streamClient on a channel to rec, served by
// the SDK's serveChannel in this process: protocol 4 without the
// processes.
func channelStream(t *testing.T, rec *recorder) *streamClient {
	t.Helper()
	hf, pf, err := newChannel()
	if err != nil {
		t.Skipf("no channels here: %v", err)
	}
	defer pf.Close()
	pc, err := net.FileConn(pf)
	if err != nil {
		t.Fatal(err)
	}
	s := &grpcServer{impl: rec, log: slog.New(slog.DiscardHandler)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.serveChannel(pc)
	}()
	st, err := openChannel(hf, func() {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.close(errors.New("the test is over"))
		<-served // the SDK's side ends when the host's closes
	})
	return st
}

// An answer too large for a frame is an Error for its call alone, on
// either transport: sent, it would fail the writer, and every reply after
// it would be lost until the call timed out. The next call is still
// answered (with the same Error, the plugin's answer being the same).
func TestOversizedReplyIsAnError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream func(*testing.T, *recorder) *streamClient
	}{
		{"channel", channelStream},
		{"grpc stream", func(t *testing.T, rec *recorder) *streamClient { return loopbackStream(t, rec) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.stream(t, &recorder{result: core.Allowed(&core.Principal{Subject: strings.Repeat("x", maxReplyBytes)})})
			flat := &authpb.Request{Route: "rest", Header: []string{"X-Token", "t"}}
			for k := range 2 {
				res := st.authenticate(context.Background(), time.Now().Add(10*time.Second), flat, proto.Size(flat), func() {})
				if res.Decision != core.Error || !strings.Contains(res.Err.Error(), "a reply may carry") {
					t.Fatalf("call %d: got %s (%v), want an Error naming the bound", k, res.Decision, res.Err)
				}
				if !st.alive() {
					t.Fatalf("call %d: the transport failed", k)
				}
			}
		})
	}
}
