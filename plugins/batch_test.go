package plugins

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/plugins/authpb"
)

// A batch is cut so that its message stays within maxBatchBytes, counting
// each item's envelope, in order, with at least one item per message.
func TestBatchWriterCutsAtMaxBatchBytes(t *testing.T) {
	const kib = 1 << 10
	// half is the item size two of which fill maxBatchBytes exactly, with
	// their envelopes (1 byte of tag, 3 of length).
	const half = maxBatchBytes/2 - 4
	tests := []struct {
		name  string
		sizes []int // each item's encoded size
		want  []int // how many items each message carries
	}{
		{"small items go together", []int{100, 200, 300}, []int{3}},
		{"cut at 1 MiB", []int{400 * kib, 400 * kib, 400 * kib, 400 * kib, 400 * kib}, []int{2, 2, 1}},
		{"exactly the bound fits", []int{half, half, 1}, []int{2, 1}},
		{"an item past the bound goes alone", []int{300 * kib, 2 << 20, 300 * kib}, []int{1, 1, 1}},
		{"an item past the bound, first", []int{5 << 20, 10, 10}, []int{1, 2}},
		{"many small items", slices.Repeat([]int{1000}, 3000), []int{1045, 1045, 910}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := batchesOf(t, tt.sizes)
			var lens, order []int
			for _, b := range got {
				lens = append(lens, len(b))
				order = append(order, b...)
				total := 0
				for _, k := range b {
					total += entrySize(tt.sizes[k])
				}
				if len(b) > 1 && total > maxBatchBytes {
					t.Errorf("a message of %d items takes %d bytes, over %d", len(b), total, maxBatchBytes)
				}
			}
			if !slices.Equal(lens, tt.want) {
				t.Errorf("items per message = %v, want %v", lens, tt.want)
			}
			for k, v := range order {
				if v != k {
					t.Fatalf("items sent in the order %v, want each once, in the order queued", order)
				}
			}
			if len(order) != len(tt.sizes) {
				t.Errorf("%d items sent, want %d", len(order), len(tt.sizes))
			}
		})
	}
}

// batchesOf queues items of the sizes given while the writer is busy
// sending another, so that they are all queued at once when it is free,
// and returns the batches it then sends, as item indexes.
func batchesOf(t *testing.T, sizes []int) [][]int {
	t.Helper()
	entered, release := make(chan struct{}), make(chan struct{})
	sent := make(chan []int, len(sizes)+1)
	first := true
	w := newBatchWriter(func(b []int) error {
		if first { // the writer never sends concurrently
			first = false
			close(entered)
			<-release
			return nil
		}
		sent <- slices.Clone(b)
		return nil
	}, func(err error) { t.Errorf("send failed: %v", err) }, func(k int) int { return sizes[k] })
	defer w.stop()
	w.add(-1, 1) // the item being sent while the others queue
	<-entered
	for k, n := range sizes {
		w.add(k, n)
	}
	close(release)
	var out [][]int
	for n := 0; n < len(sizes); {
		b := <-sent
		out = append(out, b)
		n += len(b)
	}
	return out
}

// recordingStream is the plugin's end of a Stream, in memory: it hands
// Stream the calls given, then, before it ends, records how many contexts
// derived from its own are still live.
type recordingStream struct {
	grpc.ServerStream // nil: Stream uses only the methods below
	ctx               *countingContext
	calls             []*authpb.Calls
	mu                sync.Mutex
	replies           []*authpb.Reply
	liveAtEnd         int32
}

func (s *recordingStream) Context() context.Context { return s.ctx }

func (s *recordingStream) Recv() (*authpb.Calls, error) {
	if len(s.calls) == 0 {
		s.liveAtEnd = s.ctx.live.Load()
		return nil, io.EOF
	}
	m := s.calls[0]
	s.calls = s.calls[1:]
	return m, nil
}

func (s *recordingStream) Send(r *authpb.Replies) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies = append(s.replies, r.GetReplies()...)
	return nil
}

// countingContext is a context that is never done and counts the contexts
// derived from it that were not cancelled: context.WithCancel registers
// each with its parent's AfterFunc method, and cancelling it stops that.
type countingContext struct {
	context.Context // Background: no values, no deadline
	done            chan struct{}
	live            atomic.Int32
}

func newCountingContext() *countingContext {
	return &countingContext{Context: context.Background(), done: make(chan struct{})}
}

func (c *countingContext) Done() <-chan struct{} { return c.done }

func (c *countingContext) AfterFunc(func()) func() bool {
	c.live.Add(1)
	var stopped atomic.Bool
	return func() bool {
		if stopped.CompareAndSwap(false, true) {
			c.live.Add(-1)
			return true
		}
		return false
	}
}

// A Calls message with no call costs the plugin nothing: before, each
// made a batch whose context was never cancelled, held by the stream's
// context until the stream ended.
func TestEmptyCallsLeaveNothingBehind(t *testing.T) {
	ctx := newCountingContext()
	_, cancel := context.WithCancel(ctx)
	if ctx.live.Load() != 1 {
		t.Fatal("context.WithCancel no longer registers with its parent's AfterFunc: this test cannot see what a batch leaves behind")
	}
	cancel()
	st := &recordingStream{ctx: ctx, calls: []*authpb.Calls{{}, {}, {Calls: []*authpb.Call{}}}}
	s := &grpcServer{log: Logger()}
	if err := s.Stream(st); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if st.liveAtEnd != 0 {
		t.Errorf("after 3 empty Calls messages, %d contexts derived from the stream's were never cancelled, want 0", st.liveAtEnd)
	}
}

// A stream call's size, counted from its request's size as the host counts
// it, is the call's encoded size.
func TestCallSizeFromItsRequestsSize(t *testing.T) {
	flat := &authpb.Request{Route: "rest", Header: []string{"X-Token", strings.Repeat("t", 300)}}
	for _, call := range []*authpb.Call{
		{Id: 1},
		{Id: 1 << 40, TimeoutMicros: 500_000, TraceContext: []string{"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
	} {
		n := callSize(call, proto.Size(flat))
		call.Request = flat
		if want := proto.Size(call); n != want {
			t.Errorf("call %d: counted %d bytes, encoded %d", call.Id, n, want)
		}
	}
}
