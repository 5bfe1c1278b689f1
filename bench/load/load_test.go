package load

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/agent-server/agent-server/bench/baseline"
	"github.com/agent-server/agent-server/core"
)

const (
	testKey    = "load-test-key"
	testSecret = "a-load-test-hs256-secret-32-bytes!!"
)

// startBaseline serves the reference server in process on loopback.
func startBaseline(t *testing.T) Server {
	t.Helper()
	s, err := baseline.New(baseline.Options{Keys: []string{testKey}, JWTSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return Server{
		Addr:            ln.Addr().String(),
		NewConversation: func(context.Context) (string, error) { return uuid.NewString(), nil },
	}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The echo marker survives the server's real MessageEvent rendering.
func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{0, minText, 300, 4096} {
		frame := appendMessage(nil, 12345, 987654321, size)
		msg, err := core.ParseClientFrame(frame)
		if err != nil {
			t.Fatalf("size %d: server refuses the frame: %v", size, err)
		}
		if got := len(msg.Content[0].Text); got < max(size, 1) {
			t.Errorf("size %d: text is %d bytes", size, got)
		}
		ev := &core.Event{ID: core.NewID(), Timestamp: time.Now(), Source: core.SourceUser, Kind: core.KindMessage, Body: core.MessageBody(msg)}
		if err := ev.Seal(); err != nil {
			t.Fatal(err)
		}
		seq, sent, ok := parseEcho(ev.Raw)
		if !ok || seq != 12345 || sent != 987654321 {
			t.Errorf("size %d: parseEcho = %d, %d, %v; want 12345, 987654321, true", size, seq, sent, ok)
		}
	}
	for _, bad := range []string{
		`{"kind":"MessageEvent","text":"bench:12:"}`,
		`{"kind":"MessageEvent","text":"bench::1:"}`,
		`{"kind":"ServerErrorEvent","text":"bench:1:2:"}`,
		`{"kind":"MessageEvent","text":"bench:1x:2:"}`,
	} {
		if _, _, ok := parseEcho([]byte(bad)); ok {
			t.Errorf("parseEcho(%s) = ok, want not ok", bad)
		}
	}
	var v map[string]string
	if err := json.Unmarshal(appendMessage(nil, 1, 2, 50), &v); err != nil || v["role"] != "user" || !strings.HasPrefix(v["content"], "bench:1:2:") {
		t.Errorf("frame is %v, %v", v, err)
	}
}

func TestSummarize(t *testing.T) {
	ns := make([]int64, 100)
	for i := range ns {
		ns[i] = int64(100 - i)
	}
	got := summarize(ns)
	want := Summary{Count: 100, P50: 50, P99: 99, Max: 100}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if got := summarize(nil); got != (Summary{}) {
		t.Errorf("summarize(nil) = %+v, want zero", got)
	}
}

func TestConnect(t *testing.T) {
	srv := startBaseline(t)
	for _, auth := range []Auth{AuthQuery, AuthHeader, AuthBearer, AuthJWT} {
		t.Run(string(auth), func(t *testing.T) {
			r, err := Connect(testCtx(t), srv, ConnectParams{Credentials: Credentials{Auth: auth, Key: testKey, JWTSecret: testSecret}, N: 20, Concurrency: 4})
			if err != nil {
				t.Fatal(err)
			}
			if r.OK != 20 || r.Errors != 0 || r.Attempts != 20 || r.TimeToReady.Count != 20 || r.PerSecond <= 0 {
				t.Errorf("result %+v, want 20 ok and no errors", r)
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		r, err := Connect(testCtx(t), srv, ConnectParams{Credentials: Credentials{Auth: AuthHeader, Key: testKey}, N: 20, Concurrency: 4, WrongKey: true})
		if err != nil {
			t.Fatal(err)
		}
		if r.OK != 20 || r.Errors != 0 {
			t.Errorf("result %+v, want 20 rejections", r)
		}
	})
}

func TestFanout(t *testing.T) {
	srv := startBaseline(t)
	for _, rate := range []float64{0, 500} {
		r, err := Fanout(testCtx(t), srv, FanoutParams{Credentials: Credentials{Auth: AuthQuery, Key: testKey}, Subscribers: 10, Messages: 50, Size: 200, Rate: rate, Concurrency: 4})
		if err != nil {
			t.Fatal(err)
		}
		if r.Expected != 500 || r.Delivered != 500 || r.Lost != 0 || r.Duplicates != 0 || r.Errors != 0 || r.Latency.Count != 500 {
			t.Errorf("rate %v: result %+v, want 500 delivered, none lost or duplicated", rate, r)
		}
	}
}

func TestIdleAndChurn(t *testing.T) {
	srv := startBaseline(t)
	srv.Memory = func() (Memory, error) { return Memory{RSS: 1 << 20, Anon: 1 << 19}, nil }
	ir, err := Idle(testCtx(t), srv, IdleParams{Credentials: Credentials{Auth: AuthHeader, Key: testKey}, N: 30, Concurrency: 8, PerConversation: 7, Hold: 100 * time.Millisecond, Settle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if ir.Ready != 30 || ir.Held != 30 || ir.Errors != 0 || ir.Conversations != 5 || ir.Before.RSS != 1<<20 {
		t.Errorf("idle: %+v, want 30 held over 5 conversations", ir)
	}
	cr, err := Churn(testCtx(t), srv, ChurnParams{Credentials: Credentials{Auth: AuthBearer, Key: testKey}, Rate: 100, Duration: 300 * time.Millisecond, Concurrency: 8, Warmup: 50 * time.Millisecond, Conversations: 2})
	if err != nil {
		t.Fatal(err)
	}
	if cr.Attempts != 30 || cr.OK != 30 || cr.Errors != 0 || cr.Settled.Anon != 1<<19 {
		t.Errorf("churn: %+v, want 30 clean cycles", cr)
	}
}

// A refused handshake reports its status.
func TestHandshakeError(t *testing.T) {
	srv := startBaseline(t)
	cl, err := newClient(srv.Addr, Credentials{Auth: AuthQuery, Key: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.dial(testCtx(t), "c", "nope", nil)
	he, ok := err.(*HandshakeError)
	if !ok || he.Status != 401 {
		t.Fatalf("dial with a wrong key: %v, want a HandshakeError with 401", err)
	}
}

func TestSeqSet(t *testing.T) {
	tests := []struct {
		add        []uint64
		wantPrefix uint64
	}{
		{nil, 0},
		{[]uint64{1, 2}, 0},
		{[]uint64{0, 1, 2}, 3},
		{[]uint64{2, 0, 1, 5, 3}, 4},
		{[]uint64{0, 64, 1, 130}, 2},
	}
	for _, tt := range tests {
		var s seqSet
		for _, v := range tt.add {
			s.add(v)
		}
		if got := s.prefix(); got != tt.wantPrefix {
			t.Errorf("add %v: prefix %d, want %d", tt.add, got, tt.wantPrefix)
		}
		for _, v := range tt.add {
			if !s.has(v) {
				t.Errorf("add %v: has(%d) false", tt.add, v)
			}
		}
		if s.has(999) {
			t.Errorf("add %v: has(999) true", tt.add)
		}
	}
}

func TestEventID(t *testing.T) {
	tests := []struct {
		frame, want string
		ok          bool
	}{
		{`{"id":"abc-1","kind":"MessageEvent"}`, "abc-1", true},
		{`{"kind":"MessageEvent","id":"x"}`, "", false},
		{`{"id":"","kind":"x"}`, "", false},
		{`{"id":"unterminated`, "", false},
	}
	for _, tt := range tests {
		if got, ok := eventID([]byte(tt.frame)); got != tt.want || ok != tt.ok {
			t.Errorf("eventID(%s) = %q, %v; want %q, %v", tt.frame, got, ok, tt.want, tt.ok)
		}
	}
}

// ReconnectCPU takes the background's rate, measured before the drop, out
// of the storm's CPU, over however long the storm lasted.
func TestReconnectCPU(t *testing.T) {
	tests := []struct {
		name string
		r    StormResult
		want time.Duration
	}{
		{"background at 0.5 s/s over a 2 s storm", StormResult{CPU: CPUUse{Server: 3 * time.Second}, Storm: 2 * time.Second, Background: CPUUse{Server: 2500 * time.Millisecond}, BackgroundSpan: 5 * time.Second}, 2 * time.Second},
		{"no background", StormResult{CPU: CPUUse{Server: time.Second}, Storm: time.Second, BackgroundSpan: 5 * time.Second}, time.Second},
		{"background above the storm's CPU", StormResult{CPU: CPUUse{Server: time.Second}, Storm: 4 * time.Second, Background: CPUUse{Server: 5 * time.Second}, BackgroundSpan: 5 * time.Second}, 0},
		{"not measured", StormResult{CPU: CPUUse{Server: time.Second}, Storm: time.Second}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.ReconnectCPU(); got != tt.want {
				t.Errorf("ReconnectCPU = %s, want %s", got, tt.want)
			}
		})
	}
}
