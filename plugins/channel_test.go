package plugins

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

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

// Frames written by one end are read by the other, in order, with the
// read buffer reused between them and every message intact.
func TestFramerRoundTrip(t *testing.T) {
	a, b := socketPair(t)
	w, r := newFramer(a), newFramer(b)
	sizes := []int{0, 10, 70 << 10, 3, 1 << 20}
	go func() {
		for k, n := range sizes {
			if err := w.write(&authpb.Replies{Replies: []*authpb.Reply{{Id: uint64(k + 1), Response: &authpb.AuthenticateResponse{Error: strings.Repeat("x", n)}}}}); err != nil {
				t.Errorf("write %d: %v", k, err)
			}
		}
	}()
	for k, n := range sizes {
		got := &authpb.Replies{}
		if err := r.read(got); err != nil {
			t.Fatalf("read %d: %v", k, err)
		}
		if rs := got.GetReplies(); len(rs) != 1 || rs[0].GetId() != uint64(k+1) || len(rs[0].GetResponse().GetError()) != n {
			t.Fatalf("frame %d: got %v", k, got)
		}
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

// A plugin takes its channel only from a descriptor number the host set,
// at 3 or above: anything else is no channel, never a guess.
func TestInheritedChannel(t *testing.T) {
	for _, v := range []string{"", "x", "-1", "0", "2"} {
		if c := inheritedChannel(func(string) string { return v }); c != nil {
			c.Close()
			t.Errorf("%s=%q: got a channel, want none", channelEnv, v)
		}
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
