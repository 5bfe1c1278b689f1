package actors

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/memstore"
)

// newControlHarness is a harness whose commands wait wait for a runtime
// and reply for its answers.
func newControlHarness(t *testing.T, wait, reply time.Duration) *harness {
	t.Helper()
	st := memstore.New()
	sys, err := New(Options{Store: st, Chains: staticChains{}, Limits: config.Limits{MaxEventBytes: 4096},
		Conversations: config.Conversations{IdleTimeout: time.Minute, RuntimeWait: wait, RuntimeReplyTimeout: reply}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Shutdown(context.Background()) })
	return &harness{sys: sys, store: st}
}

var runtimePrincipal = &core.Principal{Subject: "runtime", Roles: []string{core.RoleRuntime}}

// attachRuntime connects a runtime to id and waits for its state frame.
func (h *harness) attachRuntime(t *testing.T, id string) (*fakeTransport, *Conn) {
	t.Helper()
	tr := newFakeTransport()
	conn := h.sys.ConnectSocket(tr, Attach{Principal: runtimePrincipal, ConversationID: id, Runtime: true})
	if f := tr.waitFrames(t, 1)[0]; f["type"] != core.FrameTypeState {
		t.Fatalf("a runtime's first frame is %v, want a state frame", f)
	}
	return tr, conn
}

// running attaches a live client and a runtime to id and runs it.
func (h *harness) running(t *testing.T, id string) (client, runtime *fakeTransport, conn *Conn) {
	t.Helper()
	client = newFakeTransport()
	h.sys.Connect(client, &core.Principal{}, id, Replay{})
	client.waitFrames(t, 1)
	runtime, conn = h.attachRuntime(t, id)
	if err := h.sys.Run(context.Background(), id, false); err != nil {
		t.Fatal(err)
	}
	return client, runtime, conn
}

// framesWhere returns the frames for which keep holds, once there are n.
func framesWhere(t *testing.T, tr *fakeTransport, n int, what string, keep func(map[string]any) bool) []map[string]any {
	t.Helper()
	var out []map[string]any
	tr.waitFor(t, what, func(frames [][]byte, _ *core.Disconnect) bool {
		out = out[:0]
		for _, b := range frames {
			var f map[string]any
			if json.Unmarshal(b, &f) == nil && keep(f) {
				out = append(out, f)
			}
		}
		return len(out) >= n
	})
	return out
}

func isCommand(name string) func(map[string]any) bool {
	return func(f map[string]any) bool { return f["type"] == core.FrameTypeCommand && f["command"] == name }
}

func isStateUpdate(key string) func(map[string]any) bool {
	return func(f map[string]any) bool { return f["kind"] == core.KindStateUpdate && f["key"] == key }
}

func (h *harness) status(t *testing.T, id string) core.ExecutionStatus {
	t.Helper()
	c, err := h.store.Conversation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Status()
}

func publishFrame(t *testing.T, ref, event string) []byte {
	t.Helper()
	return []byte(`{"type":"publish","ref":"` + ref + `","event":` + event + `}`)
}

// A run without a runtime waits for one, then fails with a clear error;
// one that attaches in time gets the run, after the message it is about,
// and the conversation is running.
func TestRunWaitsForARuntime(t *testing.T) {
	h := newControlHarness(t, 300*time.Millisecond, time.Second)
	id := h.conversation(t)
	start := time.Now()
	err := h.sys.Run(context.Background(), id, false)
	var noRuntime *core.NoRuntimeError
	if !errors.As(err, &noRuntime) || time.Since(start) < 300*time.Millisecond || !strings.Contains(err.Error(), "no agent runtime is attached") {
		t.Fatalf("run without a runtime: %v after %s, want a NoRuntimeError after the 300ms wait", err, time.Since(start))
	}
	if got := h.status(t, id); got != core.StatusIdle {
		t.Errorf("status after a refused run = %s, want idle", got)
	}

	// A system of its own with a long wait: a loaded machine must not end
	// the wait before the runtime below attaches.
	h = newControlHarness(t, time.Minute, time.Second)
	id = h.conversation(t)
	if _, err := h.sys.PostEvent(context.Background(), id, core.SourceUser, core.KindMessage, messageBody("hi")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.sys.Run(context.Background(), id, false) }()
	time.Sleep(50 * time.Millisecond) // the run is most likely parked; it passes either way
	rt, _ := h.attachRuntime(t, id)
	if err := <-done; err != nil {
		t.Fatalf("run with a runtime attaching: %v", err)
	}
	if got := h.status(t, id); got != core.StatusRunning {
		t.Errorf("status = %s, want running", got)
	}
	// The runtime got no replay (it asked for none) but the run command.
	framesWhere(t, rt, 1, "run command", isCommand(core.CommandRun))
	if err := h.sys.Run(context.Background(), id, false); !errors.Is(err, core.ErrAlreadyRunning) {
		t.Errorf("second run: %v, want ErrAlreadyRunning", err)
	}
	if err := h.sys.Run(context.Background(), id, true); err != nil {
		t.Errorf("run allowing a running conversation: %v", err)
	}
}

// The run command reaches the runtime only after the events issued before
// it, even when its replay is still under way.
func TestRunCommandFollowsTheReplay(t *testing.T) {
	h := newControlHarness(t, time.Second, time.Second)
	id := h.conversation(t)
	for i := range 300 {
		h.post(t, id, "m"+string(rune('a'+i%26)))
	}
	rt := newFakeTransport()
	h.sys.ConnectSocket(rt, Attach{Principal: runtimePrincipal, ConversationID: id, Runtime: true, Replay: Replay{Mode: ReplayAll}})
	if err := h.sys.Run(context.Background(), id, false); err != nil {
		t.Fatal(err)
	}
	framesWhere(t, rt, 1, "run command", isCommand(core.CommandRun))
	rt.mu.Lock()
	defer rt.mu.Unlock()
	events := 0
	for _, b := range rt.frames {
		var f map[string]any
		_ = json.Unmarshal(b, &f)
		if f["type"] == core.FrameTypeCommand {
			break
		}
		if f["kind"] != nil {
			events++
		}
	}
	if events != 301 { // 300 messages, then execution_status running
		t.Errorf("the run command came after %d events, want all 301", events)
	}
}

// A runtime's first frame carries the secrets in plain text; clients never
// see them. A second runtime is refused with 1013.
func TestRuntimeStateAndOneRuntimeAtATime(t *testing.T) {
	h := newControlHarness(t, 0, time.Second)
	id := h.conversation(t)
	if err := h.sys.ChangeSettings(context.Background(), id, core.Settings{Secrets: map[string]core.SecretSource{"TOKEN": {Kind: core.SecretStatic, Value: "s3cret"}}}); err != nil {
		t.Fatal(err)
	}
	client := newFakeTransport()
	h.sys.Connect(client, &core.Principal{}, id, Replay{Mode: ReplayAll})
	rt, _ := h.attachRuntime(t, id)
	rt.mu.Lock()
	first := string(rt.frames[0])
	rt.mu.Unlock()
	if !strings.Contains(first, `"TOKEN":{"value":"s3cret","kind":"StaticSecret"}`) {
		t.Errorf("runtime state frame %s lacks the secret", first)
	}
	frames := client.waitFrames(t, 2) // full_state, then the secret_registry update
	for _, f := range frames {
		b, _ := json.Marshal(f)
		if strings.Contains(string(b), "s3cret") {
			t.Errorf("a client frame holds the secret: %s", b)
		}
	}
	if !strings.Contains(mustJSON(t, frames[0]), `"TOKEN":{"kind":"StaticSecret","value":"**********"}`) {
		t.Errorf("full_state does not mask the secret: %v", frames[0])
	}

	second := newFakeTransport()
	h.sys.ConnectSocket(second, Attach{Principal: runtimePrincipal, ConversationID: id, Runtime: true})
	if got := second.waitClosed(t); got != disconnectRuntimeTaken {
		t.Errorf("second runtime closed with %v, want %v", got, disconnectRuntimeTaken)
	}
	notRuntime := newFakeTransport()
	h.sys.ConnectSocket(notRuntime, Attach{Principal: &core.Principal{Subject: "client"}, ConversationID: id, Runtime: true})
	if got := notRuntime.waitClosed(t); got != disconnectNotRuntime {
		t.Errorf("a client on the runtime socket closed with %v, want %v", got, disconnectNotRuntime)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A runtime publishes: valid events are stored, acknowledged with their id
// and seq, and fanned out; a run's end reaches clients as a state update
// and a full_state; a state update that changes nothing is not stored; an
// unknown kind and an oversize event are refused and store nothing.
func TestRuntimePublishes(t *testing.T) {
	h := newControlHarness(t, time.Second, time.Second)
	id := h.conversation(t)
	client, rt, conn := h.running(t, id)
	acks := func(n int) []map[string]any {
		return framesWhere(t, rt, n, "answers", func(f map[string]any) bool {
			return f["type"] == core.FrameTypePublished || f["type"] == core.FrameTypeError
		})
	}
	conn.Deliver(publishFrame(t, "m1", `{"kind":"MessageEvent","source":"agent","llm_message":{"role":"assistant","content":[{"type":"text","text":"hello"}]}}`))
	conn.Deliver(publishFrame(t, "s1", `{"kind":"ConversationStateUpdateEvent","key":"execution_status","value":"running"}`))
	conn.Deliver(publishFrame(t, "x1", `{"kind":"FancyEvent","source":"agent"}`))
	conn.Deliver(publishFrame(t, "big", `{"kind":"MessageEvent","source":"agent","llm_message":{"role":"assistant","content":"`+strings.Repeat("b", 5000)+`"}}`))
	conn.Deliver(publishFrame(t, "d1", `{"kind":"StreamingDeltaEvent","content":"hel"}`))
	conn.Deliver(publishFrame(t, "s2", `{"kind":"ConversationStateUpdateEvent","key":"execution_status","value":"finished"}`))
	got := acks(6)
	byRef := map[string]map[string]any{}
	for _, f := range got {
		byRef[f["ref"].(string)] = f
	}
	if f := byRef["m1"]; f["type"] != core.FrameTypePublished || f["id"] == "" || f["seq"] != float64(2) {
		t.Errorf("message ack = %v, want published with id and seq 2 (after running)", f)
	}
	if f := byRef["s1"]; f["type"] != core.FrameTypePublished || f["id"] != "" {
		t.Errorf("unchanged state ack = %v, want published with no id", f)
	}
	if f := byRef["x1"]; f["type"] != core.FrameTypeError || f["code"] != core.CodeUnknownKind {
		t.Errorf("unknown kind answer = %v", f)
	}
	if f := byRef["big"]; f["type"] != core.FrameTypeError || f["code"] != core.CodeEventTooLarge {
		t.Errorf("oversize answer = %v", f)
	}
	if f := byRef["d1"]; f["type"] != core.FrameTypePublished || f["seq"] != float64(0) {
		t.Errorf("delta ack = %v, want published, not stored", f)
	}
	// The client saw: running, the message, finished and full_state, with
	// the delta somewhere after the message it followed (it is never
	// stored, so it does not wait for the events after it).
	frames := client.waitFrames(t, 6)[1:]
	kinds := []string{}
	delta := 0
	for i, f := range frames {
		k := f["kind"].(string)
		if k == core.KindStreamingDelta {
			delta = i
			continue
		}
		if key, ok := f["key"].(string); ok {
			k += ":" + key
		}
		kinds = append(kinds, k)
	}
	want := "ConversationStateUpdateEvent:execution_status MessageEvent ConversationStateUpdateEvent:execution_status ConversationStateUpdateEvent:full_state"
	if strings.Join(kinds, " ") != want || delta < 2 {
		t.Errorf("client frames = %v with the delta at %d, want %s with the delta after the message", kinds, delta, want)
	}
	events, _ := h.store.Events(context.Background(), id, 0, 0)
	if len(events) != 3 {
		t.Errorf("stored %d events, want 3 (running, message, finished)", len(events))
	}
	if got := h.status(t, id); got != core.StatusFinished {
		t.Errorf("status = %s, want finished", got)
	}
}

// Pause and interrupt pause an idle or running conversation with their
// event, tell the runtime, and send every client a full_state.
func TestPauseAndInterrupt(t *testing.T) {
	h := newControlHarness(t, time.Second, time.Second)
	id := h.conversation(t)
	client, rt, _ := h.running(t, id)
	if err := h.sys.Pause(context.Background(), id, false); err != nil {
		t.Fatal(err)
	}
	if got := h.status(t, id); got != core.StatusPaused {
		t.Errorf("status after pause = %s", got)
	}
	framesWhere(t, rt, 1, "pause command", isCommand(core.CommandPause))
	framesWhere(t, client, 1, "PauseEvent", func(f map[string]any) bool { return f["kind"] == core.KindPause && f["source"] == "user" })
	framesWhere(t, client, 2, "full_state after the run and the pause", isStateUpdate(core.StateKeyFullState))
	// Paused: interrupt changes nothing but still tells the runtime and the clients.
	if err := h.sys.Interrupt(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	framesWhere(t, rt, 1, "interrupt command", isCommand(core.CommandInterrupt))
	framesWhere(t, client, 3, "full_state after interrupt", isStateUpdate(core.StateKeyFullState))
	if n := len(framesWhere(t, client, 0, "", func(f map[string]any) bool { return f["kind"] == core.KindInterrupt })); n != 0 {
		t.Errorf("an interrupt of a paused conversation logged %d InterruptEvents, want none", n)
	}
}

// Interrupt is Pause with the interrupt flag, for the test above.
func (s *System) Interrupt(ctx context.Context, id string) error { return s.Pause(ctx, id, true) }

// A runtime that detaches mid-run leaves the conversation in error with a
// ConversationErrorEvent; the client stays attached and a new runtime can
// attach and run it.
func TestRuntimeLostMidRun(t *testing.T) {
	h := newControlHarness(t, time.Second, time.Second)
	id := h.conversation(t)
	client, _, conn := h.running(t, id)
	conn.Closed()
	framesWhere(t, client, 1, "ConversationErrorEvent", func(f map[string]any) bool {
		return f["kind"] == core.KindConversationError && f["code"] == core.CodeRuntimeDisconnected
	})
	framesWhere(t, client, 1, "status error", func(f map[string]any) bool {
		return f["key"] == core.StateKeyExecutionState && f["value"] == string(core.StatusError)
	})
	framesWhere(t, client, 1, "full_state", isStateUpdate(core.StateKeyFullState))
	if client.isClosed() {
		t.Fatal("the client was closed")
	}
	rt2, _ := h.attachRuntime(t, id)
	if err := h.sys.Run(context.Background(), id, false); err != nil {
		t.Fatalf("run with the new runtime: %v", err)
	}
	framesWhere(t, rt2, 1, "run command", isCommand(core.CommandRun))
}

// A conversation stored as running has lost its runtime: its actor marks
// it error when it loads, as upstream's server does after a restart.
func TestRunningConversationRecoversAsError(t *testing.T) {
	h := newControlHarness(t, 0, time.Second)
	c := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusRunning}
	if _, _, err := h.sys.CreateConversation(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	client := newFakeTransport()
	h.sys.Connect(client, &core.Principal{}, c.ID, Replay{Mode: ReplayAll})
	framesWhere(t, client, 1, "ConversationErrorEvent", func(f map[string]any) bool { return f["kind"] == core.KindConversationError })
	// The conversation's row is written from a goroutine once the state
	// changed; the frame can come first.
	deadline := time.Now().Add(10 * time.Second)
	for got := h.status(t, c.ID); got != core.StatusError; got = h.status(t, c.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("status = %s, want error", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A command the runtime answers returns its reply; one it does not answer
// in time times out; without a runtime it fails.
func TestAskRuntime(t *testing.T) {
	h := newControlHarness(t, 0, 300*time.Millisecond)
	id := h.conversation(t)
	if _, err := h.sys.AskRuntime(context.Background(), id, core.CommandAskAgent, []byte(`{"question":"q"}`)); !errors.As(err, new(*core.NoRuntimeError)) {
		t.Fatalf("ask without a runtime: %v", err)
	}
	rt, conn := h.attachRuntime(t, id)
	go func() {
		f := framesWhere(t, rt, 1, "ask_agent", isCommand(core.CommandAskAgent))[0]
		if p, _ := f["params"].(map[string]any); p["question"] != "q" {
			t.Errorf("params = %v", f["params"])
		}
		conn.Deliver([]byte(`{"type":"reply","id":"` + f["id"].(string) + `","status":200,"body":{"response":"a"}}`))
	}()
	rep, err := h.sys.AskRuntime(context.Background(), id, core.CommandAskAgent, []byte(`{"question":"q"}`))
	if err != nil || rep.Status != 200 || string(rep.Body) != `{"response":"a"}` {
		t.Fatalf("ask = %+v %v", rep, err)
	}
	_, err = h.sys.AskRuntime(context.Background(), id, core.CommandCondense, []byte(`{}`))
	if !errors.As(err, new(*core.RuntimeTimeoutError)) {
		t.Errorf("unanswered condense: %v, want a timeout", err)
	}
	// A late reply earns the runtime an error frame.
	f := framesWhere(t, rt, 1, "condense", isCommand(core.CommandCondense))[0]
	conn.Deliver([]byte(`{"type":"reply","id":"` + f["id"].(string) + `","status":200}`))
	framesWhere(t, rt, 1, "unknown reply", func(f map[string]any) bool { return f["code"] == core.CodeUnknownReply })
}

// Settings are durable when the call returns, broadcast as state updates
// (nothing for an unchanged value), and sent to the runtime.
func TestChangeSettings(t *testing.T) {
	h := newControlHarness(t, 0, time.Second)
	id := h.conversation(t)
	client := newFakeTransport()
	h.sys.Connect(client, &core.Principal{}, id, Replay{})
	client.waitFrames(t, 1)
	rt, _ := h.attachRuntime(t, id)
	policy := json.RawMessage(`{"kind":"AlwaysConfirm"}`)
	tags := map[string]string{"team": "a"}
	title := "T"
	if err := h.sys.ChangeSettings(context.Background(), id, core.Settings{ConfirmationPolicy: policy, Tags: &tags, Title: &title}); err != nil {
		t.Fatal(err)
	}
	stored, _ := h.store.Conversation(context.Background(), id)
	if string(stored.ConfirmationPolicy) != string(policy) || stored.Tags["team"] != "a" || stored.Title != "T" {
		t.Errorf("stored = %+v, want the new settings when ChangeSettings returns", stored)
	}
	framesWhere(t, client, 1, "policy update", isStateUpdate(core.StateKeyConfirmationPolicy))
	framesWhere(t, client, 1, "tags update", isStateUpdate(core.StateKeyTags))
	framesWhere(t, rt, 2, "state frames", func(f map[string]any) bool { return f["type"] == core.FrameTypeState })
	if err := h.sys.ChangeSettings(context.Background(), id, core.Settings{ConfirmationPolicy: policy}); err != nil {
		t.Fatal(err)
	}
	events, _ := h.store.Events(context.Background(), id, 0, 0)
	if len(events) != 2 {
		t.Errorf("stored %d events, want 2: an unchanged policy adds none", len(events))
	}
	if err := h.sys.ChangeSettings(context.Background(), core.NewID(), core.Settings{Title: &title}); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("settings of an unknown conversation: %v, want ErrNotFound", err)
	}
}

// A user message titles the conversation and returns a finished one to
// idle before its append is answered; a socket message runs the agent.
func TestUserMessageEffects(t *testing.T) {
	h := newControlHarness(t, 0, time.Second)
	c := &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusFinished}
	if _, _, err := h.sys.CreateConversation(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("word ", 20)
	if _, err := h.sys.PostEvent(context.Background(), c.ID, core.SourceUser, core.KindMessage, messageBody(long)); err != nil {
		t.Fatal(err)
	}
	stored, _ := h.store.Conversation(context.Background(), c.ID)
	if stored.Status() != core.StatusIdle || stored.Title != core.AutoTitle(long) || len([]rune(stored.Title)) != 50 {
		t.Errorf("after a message: status %s, title %q; want idle and the 50-character title", stored.Status(), stored.Title)
	}
	rt, _ := h.attachRuntime(t, c.ID)
	client := newFakeTransport()
	conn := h.sys.Connect(client, &core.Principal{}, c.ID, Replay{})
	client.waitFrames(t, 1)
	conn.Deliver([]byte(`{"role":"user","content":"go"}`))
	framesWhere(t, rt, 1, "run command", isCommand(core.CommandRun))
}
