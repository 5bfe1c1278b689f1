package plugins

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/plugins/authpb"
)

// Protocol 4 carries protocol 3's messages, Calls one way and Replies the
// other, over a private channel instead of a gRPC stream: a socketpair
// the host makes when it starts a process, whose plugin end the process
// inherits as a file descriptor (channelEnv names it). Each message is a
// frame, its length in 4 bytes (big-endian) and then its protobuf
// encoding. Info and Configure stay on go-plugin's gRPC connection.
//
// What it saves, per message on both sides: TLS (go-plugin's AutoMTLS),
// HTTP/2 framing and flow control, and gRPC's hand-offs between the
// sender, its transport's writer goroutine, the reader goroutine and the
// receiver. What it keeps: everything above the transport is protocol 3's
// (IDs, deadlines, trace context in each call, batching, a reply at most
// once per ID), and so are the host's guarantees, since the host's
// streamClient and the SDK's serveCalls run unchanged on it.
//
// Only the two processes hold the channel: no other process can connect
// to it, so it needs no TLS (the gRPC connection needs AutoMTLS because
// go-plugin's socket is a path another local process could dial).

// channelEnv is the environment variable that tells a plugin process the
// descriptor number of its end of the channel.
const channelEnv = "AGENT_SERVER_PLUGIN_CHANNEL_FD"

// channelFD is the descriptor the plugin's end has in the plugin process:
// the first of exec.Cmd's ExtraFiles.
const channelFD = 3

// maxFrameBytes bounds a frame either end accepts: above any message the
// other sends (the batch writers cut at maxBatchBytes, and an item alone
// is at most maxCallBytes or maxReplyBytes), so a frame past it is
// garbage, and never worth the allocation its length asks for.
const maxFrameBytes = maxRecvBytes

// maxReplyBytes is the largest encoded reply the SDK sends; a larger
// answer becomes an Error (callBatch.answer). 64 KiB below maxFrameBytes,
// for the envelope.
const maxReplyBytes = maxFrameBytes - 64<<10

// keepFrameBytes is the largest frame buffer a framer keeps between
// frames: a rare large frame's buffer is dropped after it.
const keepFrameBytes = 64 << 10

// errFrame marks a frame that breaks protocol 4: a length past
// maxFrameBytes, or bytes that do not decode as the message expected.
var errFrame = errors.New("malformed frame")

// framer reads and writes the frames of one end of a channel. read and
// write may run concurrently with each other, but neither with itself.
type framer struct {
	rw  io.ReadWriter // the connection, through channelIO
	r   *bufio.Reader
	in  []byte // the last frame read, reused
	out []byte // the last frame written, reused
}

// newFramer frames conn.
func newFramer(conn net.Conn) *framer {
	rw := channelIO(conn)
	return &framer{rw: rw, r: bufio.NewReaderSize(rw, 32<<10)}
}

// write sends m as one frame, in one write.
func (f *framer) write(m proto.Message) error {
	b, err := proto.MarshalOptions{}.MarshalAppend(append(f.out[:0], 0, 0, 0, 0), m)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	if len(b)-4 > maxFrameBytes {
		return fmt.Errorf("frame of %d bytes is over the channel's %d", len(b)-4, maxFrameBytes)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	if cap(b) <= keepFrameBytes {
		f.out = b
	} else {
		f.out = nil
	}
	if _, err := f.rw.Write(b); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// read decodes the next frame into m. A channel closed between frames is
// io.EOF; one closed inside a frame is io.ErrUnexpectedEOF.
func (f *framer) read(m proto.Message) error {
	var head [4]byte
	if _, err := io.ReadFull(f.r, head[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > maxFrameBytes {
		return fmt.Errorf("%w: %d bytes, over the channel's %d", errFrame, n, maxFrameBytes)
	}
	if cap(f.in) < int(n) {
		f.in = make([]byte, n)
	}
	b := f.in[:n]
	if _, err := io.ReadFull(f.r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil { // copies: b is reused
		return fmt.Errorf("%w: %w", errFrame, err)
	}
	if n > keepFrameBytes {
		f.in = nil
	}
	return nil
}

// hostChannel is the host's end of a channel, as the streamClient's
// callStream.
type hostChannel struct{ f *framer }

// Send sends a batch of calls.
func (h hostChannel) Send(c *authpb.Calls) error { return h.f.write(c) }

// Recv reads the next batch of replies. A malformed frame is a protocol
// fault, as a reply for an unknown ID is.
func (h hostChannel) Recv() (*authpb.Replies, error) {
	r := &authpb.Replies{}
	if err := h.f.read(r); err != nil {
		if errors.Is(err, errFrame) {
			return nil, fmt.Errorf("%w: %w", errProtocol, err)
		}
		return nil, err
	}
	return r, nil
}

// pluginChannel is the plugin's end of a channel, as serveCalls's
// replyStream.
type pluginChannel struct {
	ctx context.Context
	f   *framer
}

// Context is the channel's life: it ends when serving does.
func (p pluginChannel) Context() context.Context { return p.ctx }

// Send sends a batch of replies.
func (p pluginChannel) Send(r *authpb.Replies) error { return p.f.write(r) }

// Recv reads the next batch of calls.
func (p pluginChannel) Recv() (*authpb.Calls, error) {
	c := &authpb.Calls{}
	if err := p.f.read(c); err != nil {
		return nil, err
	}
	return c, nil
}

// openChannel opens the host's end of a started process's channel.
func openChannel(f *os.File, broken func()) (*streamClient, error) {
	conn, err := net.FileConn(f)
	f.Close() // FileConn dups it
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	return newStreamClient(hostChannel{f: newFramer(conn)}, func() { conn.Close() }, broken), nil
}
