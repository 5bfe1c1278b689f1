package load

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestObserve: every message reaches every subscriber once, and each
// delivery's latency is kept with its send time on the wall clock.
func TestObserve(t *testing.T) {
	srv := startBaseline(t)
	conv, err := srv.NewConversation(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixNano()
	start, stop := make(chan struct{}), make(chan struct{})
	r, err := Observe(testCtx(t), ObserveParams{Credentials: Credentials{Auth: AuthQuery, Key: testKey}, Addr: srv.Addr, Conversation: conv,
		Subs: 3, Rate: 200, Timeout: 5 * time.Second}, func() {
		close(start)
		time.AfterFunc(200*time.Millisecond, func() { close(stop) })
	}, start, stop)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixNano()
	if r.Sent < 10 || r.Expected != 3*r.Sent || r.Delivered != r.Expected || r.Duplicates != 0 || len(r.FirstErrors) != 0 {
		t.Fatalf("sent %d, delivered %d of %d, duplicates %d, errors %v: want every message to every subscriber once", r.Sent, r.Delivered, r.Expected, r.Duplicates, r.FirstErrors)
	}
	if len(r.Latencies) != r.Delivered {
		t.Fatalf("%d latencies for %d deliveries", len(r.Latencies), r.Delivered)
	}
	for _, l := range r.Latencies {
		if l[0] < before || l[0] > after || l[1] <= 0 || l[1] > after-before {
			t.Fatalf("latency %v: want a send time in [%d, %d] and a positive latency", l, before, after)
		}
	}
}

// TestObserveStoppedBeforeStart: an observer stopped before it was told
// to start posts nothing, and says so.
func TestObserveStoppedBeforeStart(t *testing.T) {
	srv := startBaseline(t)
	conv, err := srv.NewConversation(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	r, err := Observe(testCtx(t), ObserveParams{Credentials: Credentials{Auth: AuthQuery, Key: testKey}, Addr: srv.Addr, Conversation: conv,
		Subs: 2, Rate: 1000, Timeout: 5 * time.Second}, func() { time.AfterFunc(50*time.Millisecond, func() { close(stop) }) }, make(chan struct{}), stop)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 0 || r.Delivered != 0 || len(r.Latencies) != 0 {
		t.Fatalf("sent %d, delivered %d: want nothing before the start", r.Sent, r.Delivered)
	}
}

// TestRunObserver runs the observer process's side of the protocol: the
// key from the environment, ready once connected, posting from the start
// line, the result as JSON once stdin closes; and a refused key is an
// error, with no ready.
func TestRunObserver(t *testing.T) {
	srv := startBaseline(t)
	conv, err := srv.NewConversation(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, key string
		ok        bool
	}{
		{"the key", testKey, true},
		{"a wrong key", "wrong", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inR, inW := io.Pipe()
			t.Cleanup(func() { inW.Close() }) // ends RunObserver's reader of stdin
			outR, outW := io.Pipe()
			done := make(chan error, 1)
			go func() {
				err := RunObserver(testCtx(t), []string{"-addr", srv.Addr, "-conversation", conv, "-subs", "2", "-rate", "100", "-auth", "header"},
					func(k string) string { return map[string]string{ObserverKeyEnv: tt.key}[k] }, inR, outW, io.Discard)
				outW.CloseWithError(fmt.Errorf("observer returned: %v", err))
				done <- err
			}()
			out := bufio.NewReader(outR)
			line, rerr := out.ReadString('\n')
			if !tt.ok {
				if err := <-done; err == nil || rerr == nil {
					t.Fatalf("observer with a wrong key: error %v, said %q", err, line)
				}
				return
			}
			if line != observerReady+"\n" {
				t.Fatalf("observer said %q, %v; want ready", line, rerr)
			}
			if _, err := io.WriteString(inW, observerStart+"\n"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			inW.Close()
			var r ObserveResult
			if err := json.NewDecoder(out).Decode(&r); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if r.Sent == 0 || r.Delivered != 2*r.Sent || len(r.Latencies) != r.Delivered {
				t.Fatalf("sent %d, delivered %d, %d latencies: want each message to both subscribers", r.Sent, r.Delivered, len(r.Latencies))
			}
		})
	}
}

// TestAddQuiet: the paced fan-out's deliveries count with the storm's,
// its errors join them, and its latencies split by send time between the
// quiet window before the drop and the storm.
func TestAddQuiet(t *testing.T) {
	at := func(c int64) int64 { return epoch.UnixNano() + c }
	sec := int64(time.Second)
	r := &StormResult{Expected: 10, Delivered: 10, ErrorsByKind: map[string]int{stormErrHTTP: 1}, Errors: 1, FirstErrors: []string{"http: x"}}
	q := &ObserveResult{Expected: 6, Delivered: 5, Duplicates: 1, ErrorsByKind: map[string]int{stormErrClosed: 2}, FirstErrors: []string{"a socket closed"},
		Latencies: [][2]int64{
			{at(10*sec - 6*sec), 99}, // before the window
			{at(10*sec - 5*sec), 1},  // the window's first
			{at(10*sec - 1), 2},      // its last
			{at(10 * sec), 30},       // the drop
			{at(12 * sec), 40},       // the last resumption
			{at(12*sec + 1), 99},     // after it
		}}
	r.addQuiet(q, 10*sec, 12*sec, 5*time.Second)
	if r.Expected != 16 || r.Delivered != 15 || r.Lost != 1 || r.Duplicates != 1 {
		t.Errorf("expected %d, delivered %d, lost %d, duplicates %d; want 16, 15, 1, 1", r.Expected, r.Delivered, r.Lost, r.Duplicates)
	}
	if r.Errors != 3 || r.ErrorsByKind[stormErrClosed] != 2 || r.ErrorsByKind[stormErrHTTP] != 1 || strings.Join(r.FirstErrors, "; ") != "http: x; paced fan-out: a socket closed" {
		t.Errorf("errors %d %v %q", r.Errors, r.ErrorsByKind, r.FirstErrors)
	}
	if r.Quiet.Count != 2 || r.Quiet.Max != 2 || r.StormLatency.Count != 2 || r.StormLatency.Max != 40 {
		t.Errorf("quiet %+v, storm %+v: want 2 each, of 1-2 and 30-40", r.Quiet, r.StormLatency)
	}
}

// TestObserverProcessFaults: an observer process that does not keep the
// protocol is an error that says how, with what it wrote on stderr; it
// is never taken for a result.
func TestObserverProcessFaults(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh here")
	}
	tests := []struct {
		name, script, want string
	}{
		{"exits before ready", "echo broken >&2; exit 3", "exit status 3"},
		{"says something else", "echo hello", `said "hello"`},
		{"a result that is not JSON", "echo ready; read line; echo '{bad'", "read its result"},
		{"fails after its result", `echo ready; read line; echo '{"sent":0}'; exit 4`, "exit status 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := startObserver(testCtx(t), ObserveParams{Credentials: Credentials{Auth: AuthQuery, Key: testKey}, Subs: 1, Rate: 1, Timeout: time.Second}, []string{sh, "-c", tt.script, "observer"})
			if err == nil {
				o.start()
				_, err = o.result()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v; want one saying %q", err, tt.want)
			}
			if tt.name == "exits before ready" && !strings.Contains(err.Error(), "broken") {
				t.Errorf("error %v does not quote the observer's stderr", err)
			}
		})
	}
}
