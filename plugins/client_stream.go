package plugins

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// errProtocol marks a plugin that broke protocol 3 or 4: a reply for an ID
// the host never sent or had already seen answered, or, on the channel, a
// malformed frame. Nothing it says can be trusted, so every call in flight
// fails closed and the process is restarted.
var errProtocol = errors.New("plugin protocol fault")

// streamClient is the host's side of the protocol 3 Stream, or of the
// protocol 4 channel (channel.go), to one plugin process. Every
// Authenticate is a Call with an ID of its own on one long-lived stream:
// no HTTP/2 stream, headers or trailers per call, and the calls queued
// while a batch is being sent go out together in the next (batchWriter).
// Replies come back in any order and are matched by ID; each ID is
// answered at most once. A call whose deadline passes fails at once, but
// keeps its entry (and its caller's slot) until the plugin answers it. The
// SDK answers it by the latest deadline among the calls of its batch (they
// share one timer), which may be up to auth.rpc_timeout past its own
// (supervise.go's hang grace allows for that): a late reply is expected, a
// reply for an unknown or answered ID is a protocol fault.
type streamClient struct {
	stream callStream
	cancel context.CancelFunc
	writer *batchWriter[*authpb.Call]
	broken func() // told once when the stream fails, so the process is checked at once
	dead   atomic.Bool
	late   atomic.Int32 // calls whose deadline passed before their reply came, still unanswered

	mu      sync.Mutex
	pending map[uint64]*pendingCall
	lastID  uint64 // the ID of the latest call; IDs start at 1
	err     error  // why the stream failed; nil while it works
}

// pendingCall is one call sent and not yet answered.
type pendingCall struct {
	done     chan struct{} // closed once res holds the one answer
	res      core.Result
	release  func()    // gives the caller's slot back, once answered or failed
	deadline time.Time // zero without one
	late     bool      // its deadline passed unanswered; guarded by streamClient.mu
}

// answer gives the call's slot back and hands it its result; the stream's
// lock must not be held. The slot is free before the caller wakes, so a
// caller that calls again at once finds it free, as after a unary call.
func (p *pendingCall) answer(res core.Result) {
	p.release()
	p.res = res
	close(p.done)
}

// openStream opens the Stream on rpc and starts its reader and writer.
// broken is called (from another goroutine) once the stream has failed.
func openStream(rpc authpb.AuthenticatorClient, broken func()) (*streamClient, error) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := rpc.Stream(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open stream: %w", rpcError(err))
	}
	return newStreamClient(st, cancel, broken), nil
}

// callStream is what a streamClient needs of its transport: protocol 3's
// gRPC stream, or protocol 4's channel.
type callStream interface {
	Send(*authpb.Calls) error
	Recv() (*authpb.Replies, error)
}

// newStreamClient starts the reader and writer of st, an open transport
// that cancel ends.
func newStreamClient(st callStream, cancel context.CancelFunc, broken func()) *streamClient {
	s := &streamClient{stream: st, cancel: cancel, broken: broken, pending: make(map[uint64]*pendingCall)}
	s.writer = newBatchWriter(func(calls []*authpb.Call) error {
		return st.Send(&authpb.Calls{Calls: calls})
	}, func(err error) { s.fail(fmt.Errorf("send to plugin: %w", rpcError(err))) },
		func(c *authpb.Call) int { return proto.Size(c) })
	go s.read()
	return s
}

// authenticate sends one call, the request in its flat form (whose
// encoded size, size, the caller has checked against maxCallBytes and
// which is not measured again here), and waits for its reply, for its
// deadline (deadline, or ctx's if earlier; none when both are zero) or for
// ctx to be cancelled. The deadline is a timer of its own, not a context
// derived from ctx: one per call cost a context, a timer and a
// registration with ctx. release is called exactly once, when the process
// is done with the call: on its reply (which may come after the caller
// gave up) or when the stream fails.
func (s *streamClient) authenticate(ctx context.Context, deadline time.Time, flat *authpb.Request, size int, release func()) core.Result {
	call := &authpb.Call{}
	p := &pendingCall{done: make(chan struct{}), release: release}
	if dl, ok := ctx.Deadline(); ok && (deadline.IsZero() || dl.Before(deadline)) {
		deadline = dl
	}
	if !deadline.IsZero() {
		p.deadline = deadline
		call.TimeoutMicros = max(1, time.Until(deadline).Microseconds())
	}
	if trace.SpanContextFromContext(ctx).IsValid() {
		carrier := propagation.MapCarrier{}
		otel.GetTextMapPropagator().Inject(ctx, carrier)
		for k, v := range carrier {
			call.TraceContext = append(call.TraceContext, k, v)
		}
	}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		release()
		return core.Failed(err)
	}
	s.lastID++
	id := s.lastID
	call.Id = id
	s.pending[id] = p
	s.mu.Unlock()
	var expired <-chan time.Time
	if !deadline.IsZero() { // armed once the call is in flight: a failed stream takes no timer
		t := callTimers.Get().(*time.Timer)
		t.Reset(time.Until(deadline))
		defer func() { t.Stop(); callTimers.Put(t) }()
		expired = t.C
	}
	n := callSize(call, size)
	call.Request = flat
	s.writer.add(call, n)
	var err error
	select {
	case <-p.done:
		return p.res
	case <-expired:
		err = context.DeadlineExceeded
	case <-ctx.Done():
		err = ctx.Err()
	}
	// Only a deadline says the process is slow: a caller that went away
	// (a client that disconnected) says nothing about it, and must not
	// push the next calls to a standby.
	if errors.Is(err, context.DeadlineExceeded) {
		s.mu.Lock()
		if _, ok := s.pending[id]; ok {
			p.late = true
			s.late.Add(1)
		}
		s.mu.Unlock()
	}
	return core.Failed(fmt.Errorf("authenticate: %w", err))
}

// callSize is the encoded size of call once its request, of encoded size
// reqSize, is set as field 2: counted without walking the request again.
func callSize(call *authpb.Call, reqSize int) int {
	return proto.Size(call) + protowire.SizeTag(2) + protowire.SizeBytes(reqSize)
}

// callTimers holds the stopped timers of calls that are over, for the next
// calls' deadlines. A stopped timer delivers nothing afterwards (Go 1.23
// timers), so a reused one never fires for an earlier call.
var callTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// takeLocked removes call id from the pending calls.
func (s *streamClient) takeLocked(id uint64) (*pendingCall, bool) {
	p, ok := s.pending[id]
	if ok {
		delete(s.pending, id)
		if p.late {
			s.late.Add(-1)
		}
	}
	return p, ok
}

// read delivers replies until the stream fails.
func (s *streamClient) read() {
	for {
		msg, err := s.stream.Recv()
		if err != nil {
			s.fail(fmt.Errorf("plugin stream ended: %w", rpcError(err)))
			return
		}
		if err := s.deliver(msg.GetReplies()); err != nil {
			return
		}
	}
}

// deliver answers the calls of one batch of replies. The whole batch is
// checked before any of it is delivered: a batch with an unknown or
// answered ID fails every call in flight, its own included.
func (s *streamClient) deliver(replies []*authpb.Reply) error {
	calls := make([]*pendingCall, 0, len(replies))
	s.mu.Lock()
	for _, r := range replies {
		id := r.GetId()
		p, ok := s.takeLocked(id)
		if !ok {
			what := "an ID it was never sent"
			if id != 0 && id <= s.lastID {
				what = "an ID already answered"
			}
			err := fmt.Errorf("%w: a reply for %s (%d)", errProtocol, what, id)
			failed := s.failLocked(err)
			s.mu.Unlock()
			for _, p := range calls {
				p.answer(core.Failed(err))
			}
			s.finish(failed, err)
			return err
		}
		calls = append(calls, p)
	}
	s.mu.Unlock()
	for k, p := range calls {
		p.answer(resultFromPB(replies[k].GetResponse()))
	}
	return nil
}

// fail ends the stream: every call in flight fails closed with err, and
// every later one at once. Only the first failure counts.
func (s *streamClient) fail(err error) {
	s.mu.Lock()
	failed := s.failLocked(err)
	s.mu.Unlock()
	s.finish(failed, err)
}

// failLocked records err and takes the pending calls; nil when the stream
// had already failed.
func (s *streamClient) failLocked(err error) []*pendingCall {
	if s.err != nil {
		return nil
	}
	s.err = err
	s.dead.Store(true)
	failed := make([]*pendingCall, 0, len(s.pending))
	for id := range s.pending {
		p, _ := s.takeLocked(id)
		failed = append(failed, p)
	}
	return failed
}

// finish fails the calls failLocked took, outside the lock, and stops the
// stream; it does nothing for a stream that had already failed.
func (s *streamClient) finish(failed []*pendingCall, err error) {
	if failed == nil {
		return
	}
	for _, p := range failed {
		p.answer(core.Failed(err))
	}
	s.cancel()
	go s.writer.stop()
	s.broken()
}

// alive reports whether the stream still works.
func (s *streamClient) alive() bool { return !s.dead.Load() }

// behind reports whether a call whose caller gave up at its deadline is
// still unanswered: the process is slow, or hung.
func (s *streamClient) behind() bool { return s.late.Load() > 0 }

// overdue returns how long the oldest unanswered call has been past its
// deadline; 0 when none is. The SDK answers every call by the latest
// deadline of its batch, at most auth.rpc_timeout past its own, so a
// process that stays overdue longer has hung.
func (s *streamClient) overdue(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var worst time.Duration
	for _, p := range s.pending {
		if !p.deadline.IsZero() {
			worst = max(worst, now.Sub(p.deadline))
		}
	}
	return worst
}

// close fails what is in flight with err and ends the stream.
func (s *streamClient) close(err error) { s.fail(err) }
