package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/trace"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/memstore"
)

// fakeTransport records frames and the close; it never blocks.
type fakeTransport struct {
	mu      sync.Mutex
	frames  [][]byte
	closed  *core.Disconnect
	changed chan struct{}
}

func newFakeTransport() *fakeTransport { return &fakeTransport{changed: make(chan struct{}, 1)} }

func (f *fakeTransport) Send(frame []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed != nil {
		return false
	}
	f.frames = append(f.frames, frame)
	f.poke()
	return true
}

func (f *fakeTransport) Close(d core.Disconnect) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed == nil {
		f.closed = &d
		f.poke()
	}
}

func (f *fakeTransport) poke() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// waitFor polls cond on every change until it holds or 30 s pass.
func (f *fakeTransport) waitFor(t *testing.T, what string, cond func(frames [][]byte, closed *core.Disconnect) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		f.mu.Lock()
		ok := cond(f.frames, f.closed)
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-f.changed:
		case <-deadline:
			f.mu.Lock()
			defer f.mu.Unlock()
			t.Fatalf("timed out waiting for %s; have %d frames, closed=%v", what, len(f.frames), f.closed)
		}
	}
}

func (f *fakeTransport) waitFrames(t *testing.T, n int) []map[string]any {
	t.Helper()
	f.waitFor(t, fmt.Sprintf("%d frames", n), func(fr [][]byte, _ *core.Disconnect) bool { return len(fr) >= n })
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]map[string]any, len(f.frames))
	for i, b := range f.frames {
		if err := json.Unmarshal(b, &out[i]); err != nil {
			t.Fatalf("frame %d is not JSON: %v: %s", i, err, b)
		}
	}
	return out
}

func (f *fakeTransport) waitClosed(t *testing.T) core.Disconnect {
	t.Helper()
	f.waitFor(t, "close", func(_ [][]byte, c *core.Disconnect) bool { return c != nil })
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.closed
}

func (f *fakeTransport) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed != nil
}

// keyAuth allows a request whose X-Test-Key header or key query parameter is
// the key, denies a wrong one, abstains when both are absent.
type keyAuth struct {
	key    string
	scopes []string
	expiry time.Time
}

func (a *keyAuth) Name() string { return "testkey" }

func (a *keyAuth) Authenticate(_ context.Context, req *core.Request) core.Result {
	got := req.Header.Get("X-Test-Key")
	if got == "" {
		got = req.QueryValue("key")
	}
	switch got {
	case "":
		return core.Abstained()
	case a.key:
		return core.Allowed(&core.Principal{Subject: "tester", Scopes: a.scopes, Expiry: a.expiry})
	}
	return core.Denied("wrong key")
}

// funcAuth answers with fn.
type funcAuth func(ctx context.Context) core.Result

func (funcAuth) Name() string { return "func" }

func (f funcAuth) Authenticate(ctx context.Context, _ *core.Request) core.Result { return f(ctx) }

// boundedAuth is a funcAuth that declares itself core.Bounded.
type boundedAuth struct{ funcAuth }

func (boundedAuth) Bounded() {}

// goroutineID is the calling goroutine's number, from its stack's header.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

// staticChains serves one chain per route.
type staticChains map[core.Route]*core.Chain

func (c staticChains) Chain(r core.Route) *core.Chain { return c[r] }

func mustChain(t testing.TB, route core.Route, auths ...core.Authenticator) *core.Chain {
	t.Helper()
	c, err := core.NewChain(route, auths...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type harness struct {
	sys   *System
	store *memstore.Store
}

func newHarness(t *testing.T, limits config.Limits) *harness {
	t.Helper()
	st := memstore.New()
	chains := staticChains{core.RouteEvents: mustChain(t, core.RouteEvents, &keyAuth{key: "k"})}
	sys, err := New(Options{Store: st, Chains: chains, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sys.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &harness{sys: sys, store: st}
}

func (h *harness) conversation(t *testing.T) string {
	t.Helper()
	c := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle, CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()}
	if _, created, err := h.sys.CreateConversation(context.Background(), c); err != nil || !created {
		t.Fatalf("create conversation: created=%v err=%v", created, err)
	}
	return c.ID
}

func (h *harness) post(t *testing.T, id, text string) *core.Event {
	t.Helper()
	ev, err := h.sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody(text))
	if err != nil {
		t.Fatalf("post event: %v", err)
	}
	return ev
}

func messageBody(text string) json.RawMessage {
	return core.MessageBody(&core.UserMessage{Role: "user", Content: []core.ContentPart{{Type: "text", Text: text}}})
}

// connect attaches a fake transport and waits for its full_state frame.
func (h *harness) connect(t *testing.T, id string, replay Replay) (*fakeTransport, *Conn) {
	t.Helper()
	tr := newFakeTransport()
	c := h.sys.Connect(tr, &core.Principal{Subject: "tester"}, id, replay)
	frames := tr.waitFrames(t, 1)
	if frames[0]["kind"] != core.KindStateUpdate || frames[0]["key"] != core.StateKeyFullState {
		t.Fatalf("first frame = %v, want full_state", frames[0])
	}
	return tr, c
}

func textOf(t *testing.T, frame map[string]any) string {
	t.Helper()
	msg, _ := frame["llm_message"].(map[string]any)
	parts, _ := msg["content"].([]any)
	if len(parts) != 1 {
		t.Fatalf("frame %v has no single content part", frame)
	}
	return parts[0].(map[string]any)["text"].(string)
}

func TestFullStateIsFirstFrame(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	tr, _ := h.connect(t, id, Replay{})
	f := tr.waitFrames(t, 1)[0]
	value, _ := f["value"].(map[string]any)
	if got, want := value["id"], id; got != want {
		t.Errorf("full_state value id = %v, want %v", got, want)
	}
	if got, want := f["source"], "environment"; got != want {
		t.Errorf("source = %v, want %v", got, want)
	}
}

func TestUserMessageBroadcastIncludesSender(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	a, ca := h.connect(t, id, Replay{})
	b, _ := h.connect(t, id, Replay{})
	ca.Deliver([]byte(`{"role":"user","content":"hello"}`))
	for name, tr := range map[string]*fakeTransport{"sender": a, "other": b} {
		f := tr.waitFrames(t, 2)[1]
		if f["kind"] != core.KindMessage || f["source"] != "user" || textOf(t, f) != "hello" {
			t.Errorf("%s got %v, want the user MessageEvent", name, f)
		}
	}
	evs, _ := h.store.Events(context.Background(), id, 0, 0)
	if len(evs) != 1 {
		t.Errorf("log has %d events, want 1", len(evs))
	}
}

func TestClientFrames(t *testing.T) {
	tests := []struct {
		name     string
		frame    string
		wantCode string // "" means: no frame for this one
	}{
		{"not JSON", `hello`, core.CodeInvalidJSON},
		{"wrong role", `{"role":"agent","content":"x"}`, core.CodeInvalidMessage},
		{"no content", `{"role":"user"}`, core.CodeInvalidMessage},
		{"auth frame", `{"type":"auth","session_api_key":"k"}`, ""},
		{"bare auth frame", `{"type":"auth"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, config.Limits{})
			id := h.conversation(t)
			tr, c := h.connect(t, id, Replay{})
			c.Deliver([]byte(tt.frame))
			c.Deliver([]byte(`{"role":"user","content":"after"}`)) // the socket still works
			want := 3
			if tt.wantCode == "" {
				want = 2
			}
			frames := tr.waitFrames(t, want)
			if tt.wantCode != "" {
				if frames[1]["kind"] != core.KindServerError || frames[1]["code"] != tt.wantCode {
					t.Errorf("got %v, want ServerErrorEvent %s", frames[1], tt.wantCode)
				}
			}
			if last := frames[want-1]; last["kind"] != core.KindMessage || textOf(t, last) != "after" {
				t.Errorf("last frame %v, want the message sent after", last)
			}
			if tr.isClosed() {
				t.Error("socket closed, want it open")
			}
		})
	}
}

func TestAttachRefusals(t *testing.T) {
	h := newHarness(t, config.Limits{SubscribersPerConversation: 2})
	id := h.conversation(t)
	h.connect(t, id, Replay{})
	h.connect(t, id, Replay{})
	tests := []struct {
		name string
		id   string
		want core.Disconnect
	}{
		{"unknown conversation", core.NewID(), core.DisconnectNotFound},
		{"over the subscriber cap", id, core.DisconnectTooMany},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newFakeTransport()
			h.sys.Connect(tr, &core.Principal{}, tt.id, Replay{})
			if got := tr.waitClosed(t); got != tt.want {
				t.Errorf("closed with %v, want %v", got, tt.want)
			}
			if len(tr.frames) != 0 {
				t.Errorf("got %d frames before the close, want none", len(tr.frames))
			}
		})
	}
}

// TestReplayUnderConcurrentPublishing connects while another goroutine
// appends, and checks the connection sees exactly the replayed range and
// then every live event, each once, in order.
func TestReplayUnderConcurrentPublishing(t *testing.T) {
	const before, during = 50, 200
	tests := []struct {
		name string
		// replay builds the request from the events published before; it
		// returns the Seq of the first event the client must see.
		replay func(evs []*core.Event) (Replay, uint64)
	}{
		{"none", func(evs []*core.Event) (Replay, uint64) { return Replay{}, 0 }},
		{"all", func(evs []*core.Event) (Replay, uint64) { return Replay{Mode: ReplayAll}, 1 }},
		{"since", func(evs []*core.Event) (Replay, uint64) {
			return Replay{Mode: ReplaySince, Since: evs[19].Timestamp}, firstAtOrAfter(evs, evs[19].Timestamp)
		}},
		{"after_id", func(evs []*core.Event) (Replay, uint64) {
			return Replay{Mode: ReplayAfterID, AfterID: evs[29].ID}, evs[29].Seq + 1
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, config.Limits{})
			id := h.conversation(t)
			var evs []*core.Event
			for i := range before {
				evs = append(evs, h.post(t, id, fmt.Sprint(i)))
			}
			replay, from := tt.replay(evs)

			postErr := make(chan error, 1)
			go func() {
				for i := range during {
					if _, err := h.sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody(fmt.Sprint(before+i))); err != nil {
						postErr <- fmt.Errorf("post event %d: %w", before+i, err)
						return
					}
				}
				postErr <- nil
			}()
			tr := newFakeTransport()
			h.sys.Connect(tr, &core.Principal{}, id, replay)
			if err := <-postErr; err != nil {
				t.Fatal(err)
			}
			// The attach may still be on its way (the first full_state of a
			// process renders slowest): once its frame is here, "end" is live.
			tr.waitFrames(t, 1)
			h.post(t, id, "end") // at least one event is live, whatever the timing

			last, _ := h.store.LastSeq(context.Background(), id)
			all, _ := h.store.Events(context.Background(), id, 0, 0)
			// With no replay the client starts somewhere in the live stream.
			frames := tr.waitFrames(t, 2)
			if from == 0 {
				for _, ev := range all {
					if ev.ID == frames[1]["id"] {
						from = ev.Seq
					}
				}
			}
			frames = tr.waitFrames(t, 1+int(last-from+1))
			got := frames[1:]
			if len(got) != int(last-from+1) {
				t.Fatalf("got %d events, want %d (seq %d..%d)", len(got), last-from+1, from, last)
			}
			for i, f := range got {
				if want := all[int(from)-1+i]; f["id"] != want.ID {
					t.Fatalf("event %d: id %v, want seq %d (%s): lost, duplicated or out of order", i, f["id"], want.Seq, want.ID)
				}
			}
		})
	}
}

func firstAtOrAfter(evs []*core.Event, ts time.Time) uint64 {
	for _, ev := range evs {
		if !ev.Timestamp.Before(ts) {
			return ev.Seq
		}
	}
	return 0
}

func TestReplayUnknownEventID(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	h.post(t, id, "one")
	tr, _ := h.connect(t, id, Replay{Mode: ReplayAfterID, AfterID: core.NewID()})
	f := tr.waitFrames(t, 2)[1]
	if f["kind"] != core.KindServerError || f["code"] != codeUnknownEventID {
		t.Fatalf("second frame %v, want ServerErrorEvent %s", f, codeUnknownEventID)
	}
	h.post(t, id, "two")
	if f := tr.waitFrames(t, 3)[2]; textOf(t, f) != "two" {
		t.Errorf("third frame %v, want the live event and no replay", f)
	}
}

func TestEventsGetIncreasingSeqAndTimestamps(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	var prev *core.Event
	for i := range 100 {
		ev := h.post(t, id, fmt.Sprint(i))
		if prev != nil && (ev.Seq != prev.Seq+1 || ev.Timestamp.Before(prev.Timestamp)) {
			t.Fatalf("event %d: seq %d ts %v after seq %d ts %v", i, ev.Seq, ev.Timestamp, prev.Seq, prev.Timestamp)
		}
		if ev.Timestamp.Location() != time.UTC {
			t.Fatalf("timestamp %v is not UTC", ev.Timestamp)
		}
		prev = ev
	}
}

func TestPostEventUnknownConversation(t *testing.T) {
	h := newHarness(t, config.Limits{})
	_, err := h.sys.PostEvent(context.Background(), core.NewID(), core.SourceAgent, "ActionEvent", json.RawMessage(`{}`))
	if !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("err = %v, want core.ErrNotFound", err)
	}
}

func TestDeleteClosesSocketsWith4004(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	other := h.conversation(t)
	a, _ := h.connect(t, id, Replay{})
	b, _ := h.connect(t, id, Replay{})
	c, _ := h.connect(t, other, Replay{})
	if err := h.sys.DeleteConversation(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []*fakeTransport{a, b} {
		if got := tr.waitClosed(t); got != core.DisconnectNotFound {
			t.Errorf("closed with %v, want %v", got, core.DisconnectNotFound)
		}
	}
	if _, err := h.store.Conversation(context.Background(), id); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("store still has the conversation: %v", err)
	}
	if err := h.sys.DeleteConversation(context.Background(), id); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("second delete: %v, want core.ErrNotFound", err)
	}
	if _, err := h.sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("x")); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("post after delete: %v, want core.ErrNotFound", err)
	}
	h.post(t, other, "still here")
	if f := c.waitFrames(t, 2)[1]; textOf(t, f) != "still here" {
		t.Errorf("other conversation got %v", f)
	}
	tr := newFakeTransport()
	h.sys.Connect(tr, &core.Principal{}, id, Replay{})
	if got := tr.waitClosed(t); got != core.DisconnectNotFound {
		t.Errorf("connect after delete closed with %v, want 4004", got)
	}
}

func TestShutdownClosesEverySocketWith1001(t *testing.T) {
	h := newHarness(t, config.Limits{})
	var trs []*fakeTransport
	for range 3 {
		id := h.conversation(t)
		for range 2 {
			tr, _ := h.connect(t, id, Replay{})
			trs = append(trs, tr)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.sys.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for i, tr := range trs {
		if !tr.isClosed() {
			t.Fatalf("transport %d still open after Shutdown returned", i)
		}
		if got := tr.waitClosed(t); got != core.DisconnectShutdown {
			t.Errorf("transport %d closed with %v, want 1001", i, got)
		}
	}
	late := newFakeTransport()
	h.sys.Connect(late, &core.Principal{}, core.NewID(), Replay{})
	if got := late.waitClosed(t); got != core.DisconnectShutdown {
		t.Errorf("connect after shutdown closed with %v, want 1001", got)
	}
	if res := h.sys.Authenticate(ctx, &core.Request{Route: core.RouteEvents}); res.Decision != core.Error {
		t.Errorf("authenticate after shutdown = %v, want error", res.Decision)
	}
}

func TestPanicClosesOnlyThatConnection(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	other := h.conversation(t)
	victim, vc := h.connect(t, id, Replay{})
	peer, pc := h.connect(t, id, Replay{})
	elsewhere, _ := h.connect(t, other, Replay{})

	h.sys.root.Send(vc.pid, &crashConnection{})
	if got := victim.waitClosed(t); got != core.DisconnectInternalError {
		t.Fatalf("crashed connection closed with %v, want 1011", got)
	}
	pc.Deliver([]byte(`{"role":"user","content":"after the crash"}`))
	if f := peer.waitFrames(t, 2)[1]; textOf(t, f) != "after the crash" {
		t.Errorf("peer got %v", f)
	}
	h.post(t, other, "elsewhere")
	if f := elsewhere.waitFrames(t, 2)[1]; textOf(t, f) != "elsewhere" {
		t.Errorf("other conversation got %v", f)
	}
	if peer.isClosed() || elsewhere.isClosed() {
		t.Error("a connection other than the crashed one closed")
	}
	// The crashed connection detached: the message above reached only the peer.
	if n := len(victim.frames); n != 1 {
		t.Errorf("crashed connection got %d frames, want only full_state", n)
	}
}

func TestCredentialExpiryCloses4001(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	tests := []struct {
		name   string
		expiry time.Duration
	}{
		{"already expired", -time.Second},
		// Long enough that the attach is surely done before it expires,
		// short enough to wait for; waitClosed allows 30 s.
		{"expires while connected", 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newFakeTransport()
			h.sys.Connect(tr, &core.Principal{Expiry: time.Now().Add(tt.expiry)}, id, Replay{})
			if got := tr.waitClosed(t); got != core.DisconnectExpired {
				t.Errorf("closed with %v, want %v", got, core.DisconnectExpired)
			}
			tr.mu.Lock()
			attached := len(tr.frames) > 0
			tr.mu.Unlock()
			if tt.expiry > 0 && !attached {
				t.Error("closed before it got full_state: the credential expired before the attach, not while connected")
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	slow := funcAuth(func(ctx context.Context) core.Result { <-ctx.Done(); return core.Failed(ctx.Err()) })
	// stuck ignores its context and hangs until the test is over, so an
	// answer from Authenticate proves it did not wait for the plugin.
	release, stuckEntered := make(chan struct{}), make(chan struct{}, 1)
	t.Cleanup(func() { close(release) })
	stuck := funcAuth(func(context.Context) core.Result {
		stuckEntered <- struct{}{}
		<-release
		return core.Allowed(&core.Principal{})
	})
	boom := funcAuth(func(context.Context) core.Result { panic("plugin bug") })
	tests := []struct {
		name    string
		auth    core.Authenticator
		route   core.Route
		header  string
		timeout time.Duration
		want    core.Decision
	}{
		{"right key", &keyAuth{key: "k"}, core.RouteEvents, "k", time.Second, core.Allow},
		{"wrong key", &keyAuth{key: "k"}, core.RouteEvents, "nope", time.Second, core.Deny},
		{"no key", &keyAuth{key: "k"}, core.RouteEvents, "", time.Second, core.Deny},
		{"no chain for the route", &keyAuth{key: "k"}, core.RouteREST, "k", time.Second, core.Error},
		{"plugin honours the deadline", slow, core.RouteEvents, "", 50 * time.Millisecond, core.Error},
		{"plugin ignores the deadline", stuck, core.RouteEvents, "", 50 * time.Millisecond, core.Error},
		{"plugin panics", boom, core.RouteEvents, "", time.Second, core.Error},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys, err := New(Options{Store: memstore.New(), Chains: staticChains{core.RouteEvents: mustChain(t, core.RouteEvents, tt.auth)}})
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Shutdown(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			req := &core.Request{Route: tt.route, Header: map[string][]string{}}
			if tt.header != "" {
				req.Header.Set("X-Test-Key", tt.header)
			}
			res := sys.Authenticate(ctx, req)
			if res.Decision != tt.want {
				t.Errorf("decision = %v (%v), want %v", res.Decision, res.Err, tt.want)
			}
			if res.Decision == core.Allow && res.Principal == nil {
				t.Error("allow without a principal")
			}
			if tt.name == "plugin ignores the deadline" {
				// Authenticate answered, and the plugin was called and is
				// still hanging (release closes only at cleanup).
				select {
				case <-stuckEntered:
				case <-time.After(30 * time.Second):
					t.Fatal("the stuck plugin was never called")
				}
			}
		})
	}
}

// A chain of Bounded authenticators runs on the caller's goroutine, with
// the same deadline; any other chain runs on a goroutine of its own.
func TestAuthenticateRunsABoundedChainOnTheCaller(t *testing.T) {
	ran := make(chan string, 1)
	allow := funcAuth(func(context.Context) core.Result {
		ran <- goroutineID()
		return core.Allowed(&core.Principal{Subject: "s"})
	})
	wait := funcAuth(func(ctx context.Context) core.Result {
		ran <- goroutineID()
		<-ctx.Done()
		return core.Failed(ctx.Err())
	})
	tests := []struct {
		name       string
		auth       core.Authenticator
		timeout    time.Duration
		want       core.Decision
		sameCaller bool
	}{
		{"bounded", boundedAuth{allow}, time.Second, core.Allow, true},
		{"bounded, past the deadline", boundedAuth{wait}, 50 * time.Millisecond, core.Error, true},
		{"not bounded", allow, time.Second, core.Allow, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys, err := New(Options{Store: memstore.New(), Chains: staticChains{core.RouteEvents: mustChain(t, core.RouteEvents, tt.auth)}})
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Shutdown(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			res := sys.Authenticate(ctx, &core.Request{Route: core.RouteEvents})
			if res.Decision != tt.want {
				t.Errorf("decision = %v (%v), want %v", res.Decision, res.Err, tt.want)
			}
			if same := <-ran == goroutineID(); same != tt.sameCaller {
				t.Errorf("ran on the caller's goroutine: %v, want %v", same, tt.sameCaller)
			}
		})
	}
}

// A caller that gives up (its client went away) ends the chain's run: the
// plugin's context ends with the caller's, long before the chain's own
// deadline (authTimeout), so the run gives back its queue place and slot.
func TestAuthenticateEndsTheChainWhenTheCallerGivesUp(t *testing.T) {
	entered, ended := make(chan struct{}), make(chan error, 1)
	slow := funcAuth(func(ctx context.Context) core.Result {
		close(entered)
		<-ctx.Done()
		ended <- ctx.Err()
		return core.Failed(ctx.Err())
	})
	sys, err := New(Options{Store: memstore.New(), Chains: staticChains{core.RouteEvents: mustChain(t, core.RouteEvents, slow)}})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Shutdown(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	answered := make(chan core.Result, 1)
	go func() {
		answered <- sys.Authenticate(ctx, &core.Request{Route: core.RouteEvents, Header: map[string][]string{}})
	}()
	<-entered
	cancel()
	if res := <-answered; res.Decision != core.Error {
		t.Errorf("decision = %v, want Error", res.Decision)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the plugin's context ended with %v, want context.Canceled", err)
		}
	case <-time.After(authTimeout / 2):
		t.Fatal("the plugin still runs after its caller gave up")
	}
}

// TestAuthenticateDoesNotBlockTheSupervisor runs a slow chain and checks that
// connections are still spawned meanwhile.
func TestAuthenticateDoesNotBlockTheSupervisor(t *testing.T) {
	release := make(chan struct{})
	gate := funcAuth(func(context.Context) core.Result { <-release; return core.Allowed(&core.Principal{}) })
	st := memstore.New()
	sys, err := New(Options{Store: st, Chains: staticChains{core.RouteEvents: mustChain(t, core.RouteEvents, gate)}})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Shutdown(context.Background())
	h := &harness{sys: sys, store: st}
	done := make(chan core.Result, 1)
	go func() { done <- sys.Authenticate(context.Background(), &core.Request{Route: core.RouteEvents}) }()
	h.connect(t, h.conversation(t), Replay{}) // needs the supervisor while the chain waits
	close(release)
	if res := <-done; res.Decision != core.Allow {
		t.Errorf("decision = %v, want allow", res.Decision)
	}
}

// TestFramesNeverReachTheLog sends frames holding a credential to a
// connection that has stopped, and an auth request after shutdown: dead
// letters must not print them.
func TestFramesNeverReachTheLog(t *testing.T) {
	var buf lockedBuffer
	st := memstore.New()
	sys, err := New(Options{Store: st, Chains: staticChains{core.RouteEvents: mustChain(t, core.RouteEvents, &keyAuth{key: "k"})},
		Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{sys: sys, store: st}
	id := h.conversation(t)
	tr, c := h.connect(t, id, Replay{})
	c.Closed()
	tr.waitClosed(t)
	// Wait until the actor has stopped, so the frames below are dead letters.
	registry := sys.root.ActorSystem().ProcessRegistry
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, alive := registry.Get(c.pid); !alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection actor never stopped")
		}
	}
	for range 5 {
		c.Deliver([]byte(`{"type":"auth","session_api_key":"hunter2-secret"}`))
	}
	// A dead letter that is logged, sent after the frames: once its line is
	// in the log, the frames went through dead-letter handling before it.
	waitDeadLetterLogged(t, sys, &buf, c.pid, "marker-after-frames")
	// A first-message chain run whose connection stopped first: its answer
	// is a dead letter.
	sys.root.Send(sys.supervisor, &authenticate{Request: &core.Request{Route: core.RouteEvents,
		Header: map[string][]string{"X-Test-Key": {"hunter2-secret"}}}, Deadline: time.Now().Add(time.Second), Conn: c.pid})
	waitDeadLetterLogged(t, sys, &buf, c.pid, "marker-after-answer")
	if err := sys.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	sys.root.Send(sys.supervisor, &authenticate{Request: &core.Request{Route: core.RouteEvents,
		Header: map[string][]string{"X-Test-Key": {"hunter2-secret"}}}, Deadline: time.Now().Add(time.Second), Conn: c.pid})
	waitDeadLetterLogged(t, sys, &buf, sys.supervisor, "marker-after-shutdown")
	if logs := buf.String(); strings.Contains(logs, "hunter2") || strings.Contains(logs, "104 117 110 116 101 114 50") {
		t.Errorf("log holds the credential:\n%s", logs)
	}
}

// TestCredentialMessagesSkipDeadLetterLog: every message that can hold a
// credential and may reach a stopped actor is one protoactor never logs as
// a dead letter (its dead-letter line prints the whole message, and is
// throttled, so the test above cannot always see it).
func TestCredentialMessagesSkipDeadLetterLog(t *testing.T) {
	for _, m := range []any{&authenticate{}, &authenticated{}, &deliverFrame{}} {
		if _, ok := m.(interface{ IgnoreDeadLetterLogging() }); !ok {
			t.Errorf("%T is logged as a dead letter", m)
		}
	}
}

// waitDeadLetterLogged sends marker to the stopped pid until its dead-letter
// line is in buf (protoactor throttles dead-letter lines, so one send may go
// unprinted), for at most 30 s.
func waitDeadLetterLogged(t *testing.T, sys *System, buf *lockedBuffer, pid *actor.PID, marker string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		sys.root.Send(pid, marker)
		if strings.Contains(buf.String(), marker) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead-letter line for %q; log:\n%s", marker, buf.String())
		}
	}
}

// lockedBuffer is an io.Writer safe for concurrent log lines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestConversationPanicClosesItsSocketsOnly crashes one conversation actor:
// its sockets close with 1011, another conversation carries on, and the next
// use of the crashed one starts a fresh actor from the store.
func TestConversationPanicClosesItsSocketsOnly(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id, other := h.conversation(t), h.conversation(t)
	h.post(t, id, "before")
	a, _ := h.connect(t, id, Replay{})
	b, _ := h.connect(t, id, Replay{})
	c, _ := h.connect(t, other, Replay{})

	h.sys.root.Send(h.sys.registry, &crashConversation{ConversationID: id})
	for _, tr := range []*fakeTransport{a, b} {
		if got := tr.waitClosed(t); got != core.DisconnectInternalError {
			t.Errorf("closed with %v, want 1011", got)
		}
	}
	h.post(t, other, "unaffected")
	if f := c.waitFrames(t, 2)[1]; textOf(t, f) != "unaffected" {
		t.Errorf("other conversation got %v", f)
	}
	if c.isClosed() {
		t.Error("the other conversation's socket closed")
	}
	// The registry learns of the crash asynchronously; until then a post may
	// reach the dead actor and fail fast.
	var after *core.Event
	for deadline := time.Now().Add(30 * time.Second); after == nil; {
		ev, err := h.sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody("after"))
		switch {
		case err == nil:
			after = ev
		case time.Now().After(deadline):
			t.Fatalf("post after the crash: %v", err)
		default:
			time.Sleep(10 * time.Millisecond)
		}
	}
	if after.Seq != 2 {
		t.Errorf("seq after the crash = %d, want 2", after.Seq)
	}
	tr, _ := h.connect(t, id, Replay{Mode: ReplayAll})
	if frames := tr.waitFrames(t, 3); textOf(t, frames[1]) != "before" || textOf(t, frames[2]) != "after" {
		t.Errorf("replay after the crash = %v", frames[1:])
	}
}

// pacedTransport reports a backlog that a reader goroutine drains slowly,
// like a socket whose client reads a little at a time.
type pacedTransport struct {
	*fakeTransport
	limit  int
	mu     sync.Mutex
	queued int
}

func (p *pacedTransport) Send(frame []byte) bool {
	p.mu.Lock()
	p.queued += len(frame)
	over := p.queued > p.limit
	p.mu.Unlock()
	if over {
		p.Close(core.DisconnectSlowConsumer)
		return false
	}
	return p.fakeTransport.Send(frame)
}

func (p *pacedTransport) Backlog() (int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queued, p.limit
}

func (p *pacedTransport) drain(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Millisecond):
			p.mu.Lock()
			p.queued = max(0, p.queued-8192)
			p.mu.Unlock()
		}
	}
}

// TestLongReplayIsPaced replays a log many times the transport's bound while
// events keep coming: the replay waits for the queue instead of overflowing
// it, and the client still sees every event once, in order.
func TestLongReplayIsPaced(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	for i := range 300 {
		h.post(t, id, fmt.Sprint(i))
	}
	tr := &pacedTransport{fakeTransport: newFakeTransport(), limit: 8 << 10}
	stop := make(chan struct{})
	defer close(stop)
	go tr.drain(stop)
	postErr := make(chan error, 1)
	go func() {
		for i := range 100 {
			if _, err := h.sys.PostEvent(context.Background(), id, core.SourceAgent, core.KindMessage, messageBody(fmt.Sprint(300+i))); err != nil {
				postErr <- fmt.Errorf("post event %d: %w", 300+i, err)
				return
			}
		}
		postErr <- nil
	}()
	h.sys.Connect(tr, &core.Principal{}, id, Replay{Mode: ReplayAll})
	if err := <-postErr; err != nil {
		t.Fatal(err)
	}
	frames := tr.waitFrames(t, 401)
	if tr.isClosed() {
		t.Fatalf("transport closed with %v", tr.closed)
	}
	for i, f := range frames[1:] {
		if got := textOf(t, f); got != fmt.Sprint(i) {
			t.Fatalf("event %d is %q: lost, duplicated or out of order", i, got)
		}
	}
}

// TestClosedConnectionIsCollected guards against a conversation keeping a
// closed connection alive: protoactor's PIDs cache their process, so any
// PID a long-lived actor keeps (a watch, a subscriber entry) pins the whole
// connection actor, its transport and its request.
func TestClosedConnectionIsCollected(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	keep, _ := h.connect(t, id, Replay{}) // keeps the conversation busy and alive

	const n = 20
	var collected atomic.Int32
	for range n {
		func() {
			tr, c := h.connect(t, id, Replay{})
			runtime.AddCleanup(tr, func(*atomic.Int32) { collected.Add(1) }, &collected)
			c.Closed()
			tr.waitClosed(t)
		}()
	}
	h.post(t, id, "after the closes") // the conversation has handled every detach
	keep.waitFrames(t, 2)

	deadline := time.Now().Add(30 * time.Second)
	for collected.Load() < n && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got := collected.Load(); got < n {
		t.Fatalf("%d of %d closed connections were garbage-collected; the rest are still referenced", got, n)
	}
}

// settling is an authenticator that settles a request at once with settle
// (core.Settler) and counts its calls; Authenticate allows as "called".
type settling struct {
	settle  func() (core.Result, bool)
	settles atomic.Int32
	calls   atomic.Int32
}

func (s *settling) Name() string { return "settling" }

func (s *settling) Settle(*core.Request) (core.Result, bool) {
	s.settles.Add(1)
	return s.settle()
}

func (s *settling) Settled(core.Result) {}

func (s *settling) Authenticate(context.Context, *core.Request) core.Result {
	s.calls.Add(1)
	return core.Allowed(&core.Principal{Subject: "called"})
}

// A chain its authenticators settle at once (a cached decision) is
// answered without running the chain, unless the request is sampled for
// tracing (the chain's run makes its spans) or its caller is gone (an
// Error, as the run's); one that cannot be settled runs. A panic while
// settling fails closed.
func TestAuthenticateSettlesAtOnce(t *testing.T) {
	settled := func() (core.Result, bool) { return core.Allowed(&core.Principal{Subject: "settled"}), true }
	traced := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled}))
	unsampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}}))
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name        string
		ctx         context.Context
		settle      func() (core.Result, bool)
		want        core.Decision
		wantSubject string
		wantCalls   int32
		wantSettles int32
	}{
		{"settled", context.Background(), settled, core.Allow, "settled", 0, 1},
		{"not settled", context.Background(), func() (core.Result, bool) { return core.Result{}, false }, core.Allow, "called", 1, 1},
		{"settled but sampled for tracing", traced, settled, core.Allow, "called", 1, 0},
		{"settled, traced but not sampled", unsampled, settled, core.Allow, "settled", 0, 1},
		{"settled but the caller is gone", gone, settled, core.Error, "", 0, 0},
		{"settling panics", context.Background(), func() (core.Result, bool) { panic("cache bug") }, core.Error, "", 0, 1},
		{"settled allow without a principal", context.Background(), func() (core.Result, bool) { return core.Result{Decision: core.Allow}, true }, core.Error, "", 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &settling{settle: tt.settle}
			sys, err := New(Options{Store: memstore.New(), Chains: staticChains{core.RouteEvents: mustChain(t, core.RouteEvents, a)}})
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Shutdown(context.Background())
			res := sys.Authenticate(tt.ctx, &core.Request{Route: core.RouteEvents})
			if res.Decision != tt.want {
				t.Fatalf("decision = %v (%v), want %v", res.Decision, res.Err, tt.want)
			}
			if tt.wantSubject != "" && res.Principal.Subject != tt.wantSubject {
				t.Errorf("subject = %q, want %q", res.Principal.Subject, tt.wantSubject)
			}
			if got := a.calls.Load(); got != tt.wantCalls {
				t.Errorf("Authenticate called %d times, want %d", got, tt.wantCalls)
			}
			if got := a.settles.Load(); got != tt.wantSettles {
				t.Errorf("Settle called %d times, want %d", got, tt.wantSettles)
			}
		})
	}
}

// stuckTransport is a fakeTransport whose Close blocks until release is
// closed, after saying so on closing: it holds its connection actor in
// its Stopping handler.
type stuckTransport struct {
	*fakeTransport
	closing chan struct{}
	release chan struct{}
}

func (s *stuckTransport) Close(d core.Disconnect) {
	s.closing <- struct{}{}
	<-s.release
	s.fakeTransport.Close(d)
}

// TestShutdownOutOfTimeSaysWhatItWaitsFor: a shutdown whose context ends
// while a connection has not stopped names the step and counts the open
// connections by stage.
func TestShutdownOutOfTimeSaysWhatItWaitsFor(t *testing.T) {
	h := newHarness(t, config.Limits{})
	id := h.conversation(t)
	stuck := &stuckTransport{fakeTransport: newFakeTransport(), closing: make(chan struct{}, 1), release: make(chan struct{})}
	h.sys.Connect(stuck, &core.Principal{Subject: "tester"}, id, Replay{})
	stuck.waitFrames(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	shut := make(chan error, 1)
	go func() { shut <- h.sys.Shutdown(ctx) }()
	<-stuck.closing
	cancel()
	err := <-shut
	close(stuck.release)
	if err == nil {
		t.Fatal("shutdown returned nil with a connection still closing")
	}
	for _, want := range []string{"still closing connections after", "(1 open: 1 closing)", "context canceled"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("shutdown: %v, want it to say %q", err, want)
		}
	}
}
