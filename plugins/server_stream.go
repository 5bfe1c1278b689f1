package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/plugins/authpb"
)

// Stream serves protocol 3 inside the plugin process: the host's calls
// arrive in batches on one stream, each runs on a goroutine of its own (as
// a unary call would), and each is answered exactly once, batched with the
// other replies ready at that moment: with the plugin's result, or, when
// the call's deadline passes first, with an Error (the host has given up
// by then; the plugin's late result is dropped). The trace context travels
// inside each call.
func (s *grpcServer) Stream(st authpb.Authenticator_StreamServer) error {
	return s.serveCalls(st)
}

// replyStream is what serveCalls needs of its transport: protocol 3's
// gRPC stream, or protocol 4's channel.
type replyStream interface {
	Context() context.Context // ends when the transport does
	Recv() (*authpb.Calls, error)
	Send(*authpb.Replies) error
}

// serveChannel serves the calls that come on the channel conn (protocol
// 4) until the host closes it, and then closes it.
func (s *grpcServer) serveChannel(conn net.Conn) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer conn.Close()
	return s.serveCalls(pluginChannel{ctx: ctx, f: newFramer(conn)})
}

// serveCalls answers the calls of one transport, Stream's or
// serveChannel's, until it ends.
func (s *grpcServer) serveCalls(st replyStream) error {
	failed := make(chan error, 1)
	w := newInlineBatchWriter(func(rs []*authpb.Reply) error {
		return st.Send(&authpb.Replies{Replies: rs})
	}, func(err error) { failed <- err }, func(r *authpb.Reply) int { return proto.Size(r) })
	defer w.stop()
	ctx := st.Context()
	pool := &workers{s: s, work: make(chan job)}
	for {
		msg, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case err := <-failed:
			return err
		default:
		}
		if len(msg.GetCalls()) == 0 {
			continue // nothing to answer, and a batch's context would never be cancelled
		}
		b := newCallBatch(ctx, msg.GetCalls(), w)
		for k := range b.calls {
			pool.do(job{b: b, k: k})
		}
	}
}

// callBatch is one batch of calls being served. The calls share one
// deadline, the latest of theirs, so that a batch costs one timer and not
// one per call: a call's context may outlive its own deadline by the
// spread of its batch's (the moments the host queued them), and the host
// has already answered it at its own.
type callBatch struct {
	ctx      context.Context
	cancel   context.CancelFunc
	unexpire func() bool // stops expire from running; nil without a deadline
	calls    []*authpb.Call
	answered []atomic.Bool
	left     atomic.Int32 // calls the plugin still runs
	w        *batchWriter[*authpb.Reply]
}

func newCallBatch(ctx context.Context, calls []*authpb.Call, w *batchWriter[*authpb.Reply]) *callBatch {
	b := &callBatch{calls: calls, answered: make([]atomic.Bool, len(calls)), w: w}
	b.left.Store(int32(len(calls)))
	var longest time.Duration
	for _, c := range calls {
		longest = max(longest, time.Duration(c.GetTimeoutMicros())*time.Microsecond)
	}
	if longest > 0 {
		b.ctx, b.cancel = context.WithTimeout(ctx, longest)
		b.unexpire = context.AfterFunc(b.ctx, b.expire)
	} else {
		b.ctx, b.cancel = context.WithCancel(ctx)
	}
	return b
}

// serveCall runs call k and answers it.
func (s *grpcServer) serveCall(b *callBatch, k int) {
	c := b.calls[k]
	ctx := b.ctx
	if tc := c.GetTraceContext(); len(tc) > 1 {
		carrier := make(propagation.MapCarrier, len(tc)/2)
		for j := 0; j+1 < len(tc); j += 2 {
			carrier[tc[j]] = tc[j+1]
		}
		ctx = pluginPropagator.Extract(ctx, carrier)
	}
	b.answer(k, s.decide(ctx, requestFromFlat(c.GetRequest())))
	if b.left.Add(-1) == 0 { // every call answered: release the timer, without running expire
		if b.unexpire != nil {
			b.unexpire()
		}
		b.cancel()
	}
}

// answer queues call k's reply, unless it was answered already. A reply
// too large for a frame is an Error instead: sent, it would fail the
// writer, and every reply after it.
func (b *callBatch) answer(k int, resp *authpb.AuthenticateResponse) {
	if b.answered[k].CompareAndSwap(false, true) {
		r := &authpb.Reply{Id: b.calls[k].GetId(), Response: resp}
		n := proto.Size(r)
		if n > maxReplyBytes {
			r.Response = &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ERROR,
				Error: fmt.Sprintf("the plugin's answer takes %d bytes encoded, more than the %d a reply may carry", n, maxReplyBytes)}
			n = proto.Size(r)
		}
		b.w.add(r, n)
	}
}

// expire answers every call still running with an Error once the batch's
// deadline has passed (or the stream ended).
func (b *callBatch) expire() {
	for k := range b.calls {
		b.answer(k, &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ERROR,
			Error: "the plugin did not answer within the call's deadline: " + context.Cause(b.ctx).Error()})
	}
}

// workers runs each call on an idle goroutine of its own, starting one when
// none is idle, so that calls run concurrently as unary calls do, without
// paying for a new goroutine's stack to grow on every call. A worker idle
// for workerIdle ends.
type workers struct {
	s    *grpcServer
	work chan job
}

// job is one call of a batch for a worker to serve: a value, so that
// handing a call over allocates nothing.
type job struct {
	b *callBatch
	k int
}

// workerIdle is how long an idle worker waits for another call.
const workerIdle = 10 * time.Second

// workerStackHold is the stack an idle worker keeps in use while it waits
// (idle's frame). The garbage collector halves the stack of a goroutine
// that uses less than a quarter of it, and a worker waiting in a shallow
// frame was shrunk at every collection, only to grow again (copying its
// stack) on its next call: under a storm, several times a millisecond.
// Held this deep, a worker's stack of up to four times as much is never
// shrunk: 16 KiB, where a jwt decision through the SDK needs 4 to 8. The
// frame is zeroed on every wait, so holding more costs every call more.
const workerStackHold = 4 << 10

// do runs j on an idle worker, or a new one.
func (w *workers) do(j job) {
	select {
	case w.work <- j:
	default:
		go w.loop(j)
	}
}

func (w *workers) loop(j job) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		w.s.serveCall(j.b, j.k)
		idle.Reset(workerIdle)
		var ok bool
		if j, ok = w.idle(idle); !ok {
			return
		}
	}
}

// idle waits for the next job, false when the worker has been idle for
// workerIdle, holding workerStackHold of stack meanwhile.
//
//go:noinline
func (w *workers) idle(t *time.Timer) (job, bool) {
	var hold [workerStackHold]byte
	select {
	case j := <-w.work:
		return j, hold[len(hold)-1] == 0 // always true: reading hold keeps it on the frame
	case <-t.C:
		return job{}, false
	}
}
