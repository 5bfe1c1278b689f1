package plugins

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// heldEnd is a plugin's end of a Stream that answers only when the test
// says: every call sent shows up on sent.
type heldEnd struct {
	grpc.ClientStream // not used
	replyQueue
	sent chan *authpb.Call
}

func newHeldEnd() *heldEnd {
	return &heldEnd{sent: make(chan *authpb.Call, 16), replyQueue: make(replyQueue, 16)}
}

func (e *heldEnd) Send(c *authpb.Calls) error {
	for _, call := range c.GetCalls() {
		e.sent <- call
	}
	return nil
}

// replyQueue is a plugin end's replies, in the order the host's reader
// receives them; closing it ends the stream.
type replyQueue chan *authpb.Replies

func (q replyQueue) Recv() (*authpb.Replies, error) {
	r, ok := <-q
	if !ok {
		return nil, io.EOF
	}
	return r, nil
}

// allow answers call id with an Allow.
func (e *heldEnd) allow(id uint64) {
	e.replyQueue <- &authpb.Replies{Replies: []*authpb.Reply{{Id: id, Response: resultToPB(core.Allowed(&core.Principal{Subject: "s"}))}}}
}

func heldStream(t *testing.T) (*streamClient, *heldEnd) {
	t.Helper()
	end := newHeldEnd()
	st := newStreamClient(end, func() {}, func() {})
	t.Cleanup(func() { st.close(errors.New("the test is over")); close(end.replyQueue) })
	return st, end
}

// A call's deadline is the earlier of the one it is given and its ctx's,
// and holds without a context of its own: the call fails at it, the plugin
// is told what is left of it, and the process counts as behind; a caller
// that goes away fails its call without making the process behind.
func TestStreamCallDeadlines(t *testing.T) {
	const short = 50 * time.Millisecond
	for _, tc := range []struct {
		name      string
		ctx       func() (context.Context, context.CancelFunc)
		deadline  time.Duration // from the call; 0 for none
		cancel    bool          // the caller goes away once the call is sent
		want      error
		wantLate  bool
		wantLeft  time.Duration // at most what the plugin is told is left
		wantAfter time.Duration // the call fails no earlier
	}{
		{name: "its own deadline", ctx: withCancel, deadline: short, want: context.DeadlineExceeded, wantLate: true, wantLeft: short, wantAfter: short},
		{name: "ctx's earlier deadline", ctx: withTimeout(short), deadline: time.Hour, want: context.DeadlineExceeded, wantLate: true, wantLeft: short, wantAfter: short},
		{name: "ctx's deadline alone", ctx: withTimeout(short), want: context.DeadlineExceeded, wantLate: true, wantLeft: short, wantAfter: short},
		{name: "cancelled", ctx: withCancel, deadline: time.Hour, cancel: true, want: context.Canceled, wantLeft: time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, end := heldStream(t)
			start := time.Now() // before any deadline is set: none ends before start+short
			ctx, cancel := tc.ctx()
			defer cancel()
			var deadline time.Time
			if tc.deadline > 0 {
				deadline = start.Add(tc.deadline)
			}
			released := make(chan struct{})
			done := make(chan core.Result, 1)
			go func() {
				done <- st.authenticate(ctx, deadline, &authpb.Request{Route: "rest"}, 0, func() { close(released) })
			}()
			call := <-end.sent
			if got := time.Duration(call.GetTimeoutMicros()) * time.Microsecond; got <= 0 || got > tc.wantLeft {
				t.Errorf("the plugin was told %s left, want (0, %s]", got, tc.wantLeft)
			}
			if tc.cancel {
				cancel()
			}
			res := <-done
			if elapsed := time.Since(start); elapsed < tc.wantAfter {
				t.Errorf("failed after %s, before its deadline (%s)", elapsed, tc.wantAfter)
			}
			if res.Decision != core.Error || !errors.Is(res.Err, tc.want) {
				t.Fatalf("got %s (%v), want an error of %v", res.Decision, res.Err, tc.want)
			}
			if got := st.behind(); got != tc.wantLate {
				t.Errorf("behind() = %v, want %v", got, tc.wantLate)
			}
			select {
			case <-released:
				t.Fatal("the slot was released before the plugin answered")
			default:
			}
			end.allow(call.GetId()) // the late answer gives the slot back and clears the lateness
			<-released
			if st.behind() {
				t.Error("still behind once the late call was answered")
			}
		})
	}
}

func withCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
func withTimeout(d time.Duration) func() (context.Context, context.CancelFunc) {
	return func() (context.Context, context.CancelFunc) { return context.WithTimeout(context.Background(), d) }
}

// Deadlines are pooled timers: a timer that fired for one call (and was
// received), or was stopped when another was answered, is reset for the
// next call and never ends it before its own deadline. (A fired timer
// whose value nobody received is Go 1.23's to drop, which go.mod's Go
// version guarantees.)
func TestReusedDeadlineTimerDoesNotFireForTheNextCall(t *testing.T) {
	st, end := heldStream(t)
	ctx := context.Background()
	const short = 20 * time.Millisecond
	call := func(deadline time.Duration, answerAfter time.Duration) core.Result {
		done := make(chan core.Result, 1)
		go func() {
			done <- st.authenticate(ctx, time.Now().Add(deadline), &authpb.Request{Route: "rest"}, 0, func() {})
		}()
		c := <-end.sent
		if answerAfter >= 0 {
			time.Sleep(answerAfter)
			end.allow(c.GetId())
		}
		res := <-done
		if answerAfter < 0 {
			end.allow(c.GetId()) // answered late, once the caller gave up
		}
		return res
	}
	for k := range 10 {
		if res := call(short, -1); !errors.Is(res.Err, context.DeadlineExceeded) {
			t.Fatalf("round %d: an unanswered call got %s (%v), want its deadline", k, res.Decision, res.Err)
		}
		if res := call(time.Hour, 0); res.Decision != core.Allow {
			t.Fatalf("round %d: an answered call got %s (%v), want allow", k, res.Decision, res.Err)
		}
		if res := call(time.Hour, 2*short); res.Decision != core.Allow {
			t.Fatalf("round %d: a call answered past the previous calls' deadlines got %s (%v), want allow", k, res.Decision, res.Err)
		}
	}
}

// A caller that has its answer finds its slot already given back, on the
// stream as after a unary call: a caller that calls again at once must not
// find its own finished call still holding the process's one slot (it
// would wait, or be sent to another process).
func TestAnsweredCallHasReleasedItsSlot(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(st *streamClient, end *heldEnd, id uint64)
	}{
		{"answered", func(_ *streamClient, end *heldEnd, id uint64) { end.allow(id) }},
		{"the stream failed", func(st *streamClient, _ *heldEnd, _ uint64) { st.fail(errors.New("plugin gone")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, end := heldStream(t)
			var released atomic.Bool
			done := make(chan bool, 1)
			go func() {
				// A slow release: a caller woken before it ends returns first.
				slow := func() { time.Sleep(20 * time.Millisecond); released.Store(true) }
				st.authenticate(context.Background(), time.Time{}, &authpb.Request{Route: "rest"}, 0, slow)
				done <- released.Load()
			}()
			call := <-end.sent
			tc.answer(st, end, call.GetId())
			if !<-done {
				t.Fatal("authenticate returned before the call's slot was released")
			}
		})
	}
}
