package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The storm's paced fan-out measures the server's delivery latency while
// the storm clients reconnect. Measured in the generator that also runs
// those clients, it measured the generator: during a storm the generator's
// one core is saturated and its run queue holds a thousand goroutines
// and more, so a delivery waited there for hundreds of milliseconds after
// the server had sent it. Observe runs the fan-out on its own, and the
// storm runs it in a process of its own (StormParams.Observer, agent-bench
// observe), whose few goroutines get the core whenever a frame arrives.

// ObserveParams configures Observe.
type ObserveParams struct {
	Credentials                // the publisher's and the subscribers' key
	Addr         string        // the server
	Conversation string        // the conversation, which exists
	Subs         int           // subscribers
	Rate         float64       // messages per second
	Size         int           // text bytes per message
	Timeout      time.Duration // longest wait, once stopped, for the last deliveries
}

// ObserveResult is what Observe measured.
type ObserveResult struct {
	Sent         int            `json:"sent"`
	Expected     int            `json:"expected"` // Sent to each subscriber
	Delivered    int            `json:"delivered"`
	Duplicates   int            `json:"duplicates"`
	Reordered    int            `json:"reordered"`
	ErrorsByKind map[string]int `json:"errors_by_kind"` // of StormErrorKinds
	FirstErrors  []string       `json:"first_errors,omitempty"`
	// Latencies are every delivery's send time, in wall-clock nanoseconds
	// (time.Time.UnixNano: comparable between processes), and its
	// send-to-receipt latency in nanoseconds.
	Latencies [][2]int64 `json:"latencies"`
}

// Observe connects a publisher and Subs subscribers to the conversation,
// calls ready, and once start is closed posts Rate messages a second until
// stop is closed (nothing, if stop comes first). It then waits until every
// subscriber has every message (or Timeout passes), closes the sockets
// and counts.
func Observe(ctx context.Context, p ObserveParams, ready func(), start, stop <-chan struct{}) (*ObserveResult, error) {
	if p.Subs < 1 || p.Rate <= 0 || p.Timeout <= 0 {
		return nil, errors.New("observe: subscribers, rate and timeout must be positive")
	}
	cl, err := newClient(p.Addr, p.Credentials)
	if err != nil {
		return nil, fmt.Errorf("observe: %w", err)
	}
	cl.readBuf = bulkBufSize
	st := &storm{p: StormParams{Size: max(p.Size, minText), Timeout: p.Timeout}, convs: []string{p.Conversation}, sent: make([]atomic.Uint64, 1)}
	defer st.closeAll()
	pub, err := cl.dial(ctx, p.Conversation, p.Key, nil)
	if err != nil {
		return nil, fmt.Errorf("observe: publisher: %w", err)
	}
	st.pubs = []*conn{pub}
	st.clients = make([]*stormClient, p.Subs)
	for i := range st.clients {
		sc := &stormClient{cred: p.Key}
		c, _, err := st.dial(ctx, cl, sc, nil, true)
		if err != nil {
			return nil, fmt.Errorf("observe: subscriber %d: %w", i, err)
		}
		sc.c = c
		st.clients[i] = sc
	}
	ready()
	select {
	case <-start:
		st.pace(ctx, stop, p.Rate, func(int) bool { return st.send(0) })
	case <-stop:
	case <-ctx.Done():
	}
	st.drain(ctx)
	st.closedEarly()
	st.closeAll()
	r := &ObserveResult{Sent: int(st.sent[0].Load()), ErrorsByKind: map[string]int{}}
	at := epoch.UnixNano()
	for _, sc := range st.clients {
		r.Expected += r.Sent
		r.Delivered += sc.got
		r.Duplicates += sc.dups
		r.Reordered += sc.late
		if sc.high > uint64(r.Sent) {
			st.addErr(stormErrReplay, fmt.Errorf("a subscriber got seq %d of %d sent", sc.high-1, r.Sent))
		}
		for _, l := range sc.lat {
			r.Latencies = append(r.Latencies, [2]int64{at + l[0], l[1]})
		}
	}
	for _, k := range StormErrorKinds {
		if v, ok := st.kinds.Load(k); ok {
			r.ErrorsByKind[k] = int(v.(*atomic.Int64).Load())
		}
	}
	_, r.FirstErrors = st.errs.snapshot()
	return r, ctx.Err()
}

// The observer process's protocol (RunObserver and observer): its flags
// say what to observe, ObserverKeyEnv carries the key (not the command
// line, which every local user can read), it writes observerReady on a
// line of its own once connected, posts from the observerStart line on its
// stdin, and when its stdin closes it stops, writes its ObserveResult as
// JSON and exits.
const (
	// ObserverKeyEnv is the environment variable that gives the observer
	// process its key.
	ObserverKeyEnv = "AGENT_BENCH_OBSERVE_KEY"
	observerReady  = "ready"
	observerStart  = "start"
)

// RunObserver is the observer process (agent-bench observe): args are its
// flags, getenv reads ObserverKeyEnv. It runs Observe, posting from the
// start line on stdin until stdin closes, and writes the result to stdout;
// stderr gets the flags' usage.
func RunObserver(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent-bench observe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var p ObserveParams
	auth := fs.String("auth", string(AuthQuery), "where the sockets put the key: query, header or bearer")
	fs.StringVar(&p.Addr, "addr", "", "the server's host:port")
	fs.StringVar(&p.Conversation, "conversation", "", "the conversation to post to and subscribe to")
	fs.IntVar(&p.Subs, "subs", 100, "subscribers")
	fs.Float64Var(&p.Rate, "rate", 100, "messages per second")
	fs.IntVar(&p.Size, "size", minText, "text bytes per message")
	fs.DurationVar(&p.Timeout, "timeout", time.Minute, "longest wait, once stopped, for the last deliveries")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p.Credentials = Credentials{Auth: Auth(*auth), Key: getenv(ObserverKeyEnv)}
	start, stop := make(chan struct{}), make(chan struct{})
	go func() { // ends with stdin: the process's, or a test's pipe
		in := bufio.NewScanner(stdin)
		for in.Scan() {
			if in.Text() == observerStart {
				close(start)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdin)
		close(stop)
	}()
	w := bufio.NewWriter(stdout)
	res, err := Observe(ctx, p, func() {
		fmt.Fprintln(w, observerReady)
		_ = w.Flush()
	}, start, stop)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(w).Encode(res); err != nil {
		return fmt.Errorf("observe: write the result: %w", err)
	}
	return w.Flush()
}

// observer is a running Observe, in this process or another.
type observer struct {
	start func()        // begins the posting
	stop  func()        // ends it
	done  chan struct{} // closed once res and err are set
	res   *ObserveResult
	err   error
}

// startObserver starts Observe in the process argv runs (RunObserver's),
// or here when argv is empty, and returns once it is connected.
func startObserver(ctx context.Context, p ObserveParams, argv []string) (*observer, error) {
	if len(argv) == 0 {
		return observeHere(ctx, p)
	}
	return observeApart(ctx, p, argv)
}

// observeHere runs Observe on a goroutine of this process.
func observeHere(ctx context.Context, p ObserveParams) (*observer, error) {
	start, stop, ready := make(chan struct{}), make(chan struct{}), make(chan struct{})
	o := &observer{start: sync.OnceFunc(func() { close(start) }), stop: sync.OnceFunc(func() { close(stop) }), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		o.res, o.err = Observe(ctx, p, func() { close(ready) }, start, stop)
	}()
	select {
	case <-ready:
		return o, nil
	case <-o.done:
		return nil, o.err
	}
}

// observeApart runs Observe in a process of its own.
func observeApart(ctx context.Context, p ObserveParams, argv []string) (*observer, error) {
	args := append(argv[1:len(argv):len(argv)],
		"-addr", p.Addr, "-conversation", p.Conversation, "-auth", string(p.Auth),
		"-subs", strconv.Itoa(p.Subs), "-rate", strconv.FormatFloat(p.Rate, 'g', -1, 64),
		"-size", strconv.Itoa(p.Size), "-timeout", p.Timeout.String())
	cmd := exec.CommandContext(ctx, argv[0], args...)
	cmd.Env = append(os.Environ(), ObserverKeyEnv+"="+p.Key)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = stdin.Close()
		return nil, fmt.Errorf("observer: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the observer: %w", err)
	}
	o := &observer{
		start: sync.OnceFunc(func() { _, _ = io.WriteString(stdin, observerStart+"\n") }),
		stop:  sync.OnceFunc(func() { _ = stdin.Close() }),
		done:  make(chan struct{}),
	}
	ready := make(chan struct{})
	go func() {
		defer close(o.done)
		out := bufio.NewReader(stdout)
		line, err := out.ReadString('\n')
		if err == nil && line == observerReady+"\n" {
			close(ready)
			var res ObserveResult
			if err = json.NewDecoder(out).Decode(&res); err == nil {
				o.res = &res
			} else {
				err = fmt.Errorf("read its result: %w", err)
			}
		} else if err == nil {
			err = fmt.Errorf("said %q, not %q", strings.TrimSpace(line), observerReady)
		}
		_, _ = io.Copy(io.Discard, out)
		if err = errors.Join(err, cmd.Wait()); err != nil {
			o.res, o.err = nil, fmt.Errorf("observer: %w (its stderr: %q)", err, bytes.TrimSpace(stderr.Bytes()))
		}
	}()
	select {
	case <-ready:
		return o, nil
	case <-o.done:
		return nil, o.err
	}
}

// result stops the observer (if stop has not) and waits for what it
// measured.
func (o *observer) result() (*ObserveResult, error) {
	o.stop()
	<-o.done
	return o.res, o.err
}
