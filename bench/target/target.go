// Package target starts and stops the servers agent-bench measures, each in
// a process of its own so that its memory and CPU can be read from /proc:
//
//   - agent-server: the built binary with its real plugin processes and a
//     generated config that keeps the defaults except where a scenario
//     needs otherwise (see agentServerConfig);
//   - baseline: the reference server of package baseline, run by a command
//     the caller names (agent-bench baseline ...).
//
// A server may be pinned to CPUs with taskset. Its plugins inherit the
// pinning, so they share the server's cores, as they would in production.
package target

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agent-server/agent-server/bench/load"
)

// Kind names a server.
type Kind string

// The servers agent-bench knows.
const (
	AgentServer Kind = "agent-server"
	Baseline    Kind = "baseline"
	// AgentServerNoMetrics is agent-server with metrics.enabled: false, to
	// measure what the metrics cost against AgentServer in the same run.
	AgentServerNoMetrics Kind = "agent-server-nometrics"
)

// ParseKind checks a Kind name.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case AgentServer, Baseline, AgentServerNoMetrics:
		return k, nil
	}
	return "", fmt.Errorf("target %q: want agent-server, agent-server-nometrics or baseline", s)
}

// isAgentServer reports whether k runs agent-server.
func (k Kind) isAgentServer() bool { return k == AgentServer || k == AgentServerNoMetrics }

// Bounds on starting and stopping.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
	logTail      = 16 << 10 // bytes of stderr kept for error messages
)

// Spec says how to start a server.
type Spec struct {
	Kind Kind
	Key  string // the session API key every scenario uses

	// agent-server
	ServerBin     string // path of the agent-server binary
	PluginDir     string // directory of its auth-* plugins
	JWTSecret     string // when set, the events chain is [query, header, jwt, bearer]
	SubscriberCap int    // limits.subscribers_per_conversation (0 keeps the default)
	Storage       string // storage.driver (empty keeps the default)
	Pprof         bool   // admin.pprof: serve profiles on the admin listener (Process.Admin)

	// baseline
	BaselineCmd []string // the command that serves the baseline, before its flags

	CPUs string            // taskset -c list for the server; empty for no pinning
	Env  []string          // extra environment, KEY=VALUE
	Dir  string            // scratch directory for the config; a temp dir when empty
	Log  func(line string) // optional: sees every stderr line
}

// Process is a running server.
type Process struct {
	Kind Kind
	Addr string
	PID  int
	key  string

	cmd    *exec.Cmd
	dir    string // removed on Stop when we made it
	ownDir bool
	exited chan struct{}
	err    error

	mu     sync.Mutex
	tail   []byte // the last logTail bytes of stderr
	errors int    // stderr lines at level ERROR
	admin  string // agent-server's admin listener, once logged
}

// AdminAddr returns agent-server's admin listener address (metrics,
// health, and profiles with Spec.Pprof), or "" for the baseline.
func (p *Process) AdminAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.admin
}

// listening matches the line both servers log once they listen, and
// adminListening agent-server's admin listener's.
var (
	listening      = regexp.MustCompile(`msg=listening addr=(\S+)`)
	adminListening = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)
)

// Start runs the server of spec on an ephemeral loopback port and returns
// once it is ready (agent-server: /ready answers 200).
func Start(ctx context.Context, spec Spec) (*Process, error) {
	if spec.Key == "" {
		return nil, errors.New("target: a key is required")
	}
	p := &Process{Kind: spec.Kind, key: spec.Key, dir: spec.Dir, exited: make(chan struct{})}
	if p.dir == "" {
		d, err := os.MkdirTemp("", "agent-bench-")
		if err != nil {
			return nil, err
		}
		p.dir, p.ownDir = d, true
	}
	argv, err := command(spec, p.dir)
	if err != nil {
		p.cleanup()
		return nil, err
	}
	if spec.CPUs != "" {
		argv = append([]string{"taskset", "-c", spec.CPUs}, argv...)
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = p.dir
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + p.dir}, spec.Env...)
	p.cmd.Stdout = io.Discard
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		p.cleanup()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		p.cleanup()
		return nil, fmt.Errorf("start %s: %w", spec.Kind, err)
	}
	p.PID = p.cmd.Process.Pid
	addrc := make(chan string, 1)
	go p.readLog(stderr, addrc, spec.Log)

	t := time.NewTimer(startTimeout)
	defer t.Stop()
	select {
	case p.Addr = <-addrc:
	case <-p.exited:
		p.cleanup()
		return nil, fmt.Errorf("%s exited before listening: %v\n%s", spec.Kind, p.err, p.Tail())
	case <-t.C:
		p.Stop()
		return nil, fmt.Errorf("%s did not listen within %s\n%s", spec.Kind, startTimeout, p.Tail())
	case <-ctx.Done():
		p.Stop()
		return nil, ctx.Err()
	}
	if spec.Kind.isAgentServer() {
		if err := p.waitReady(ctx); err != nil {
			p.Stop()
			return nil, err
		}
	}
	return p, nil
}

// command returns the argv that serves spec on 127.0.0.1:0.
func command(spec Spec, dir string) ([]string, error) {
	switch {
	case spec.Kind.isAgentServer():
		if spec.ServerBin == "" || spec.PluginDir == "" {
			return nil, errors.New("target: agent-server needs ServerBin and PluginDir")
		}
		pluginDir, err := filepath.Abs(spec.PluginDir)
		if err != nil {
			return nil, err
		}
		cfg := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cfg, []byte(agentServerConfig(spec, pluginDir)), 0o600); err != nil {
			return nil, err
		}
		bin, err := filepath.Abs(spec.ServerBin)
		if err != nil {
			return nil, err
		}
		return []string{bin, "serve", "--config", cfg, "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, nil
	case spec.Kind == Baseline:
		if len(spec.BaselineCmd) == 0 {
			return nil, errors.New("target: baseline needs BaselineCmd")
		}
		argv := append(append([]string(nil), spec.BaselineCmd...), "-addr", "127.0.0.1:0", "-key", spec.Key)
		if spec.JWTSecret != "" {
			argv = append(argv, "-jwt-secret", spec.JWTSecret)
		}
		return argv, nil
	}
	return nil, fmt.Errorf("target: unknown kind %q", spec.Kind)
}

// agentServerConfig is config.yaml's defaults except: the bench key; no
// failed-auth rate limit (the reject scenario would measure the 429 path
// instead of authentication); no inbound message rate limit (the fan-out
// publisher sends as fast as the server accepts); the subscriber cap the
// fan-out needs; for the uncached JWT scenario, the jwt plugin in the
// events chain; the storage driver when one is asked for; metrics off for
// AgentServerNoMetrics; and admin.pprof when asked. The decision cache, the
// plugins, the access log, the audit log, the metrics and every other limit
// keep their defaults. The store's files, if any, go in the scratch
// directory; the admin listener takes a free port.
func agentServerConfig(spec Spec, pluginDir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "auth:\n  keys: [%q]\n  failures_per_minute: 0\n", spec.Key)
	if spec.JWTSecret != "" {
		b.WriteString("  chains:\n    events: [query, header, jwt, bearer]\n")
	}
	fmt.Fprintf(&b, "plugins:\n  dir: %q\n", pluginDir)
	if spec.JWTSecret != "" {
		fmt.Fprintf(&b, "  instances:\n    jwt:\n      config:\n        secret: %q\n", spec.JWTSecret)
	}
	b.WriteString("limits:\n  messages_per_second: 0\n")
	if spec.SubscriberCap > 0 {
		fmt.Fprintf(&b, "  subscribers_per_conversation: %d\n", spec.SubscriberCap)
	}
	if spec.Storage != "" {
		fmt.Fprintf(&b, "storage:\n  driver: %q\n", spec.Storage)
	}
	if spec.Kind == AgentServerNoMetrics {
		b.WriteString("metrics:\n  enabled: false\n")
	}
	if spec.Pprof {
		b.WriteString("admin:\n  pprof: true\n")
	}
	return b.String()
}

// readLog keeps the tail of stderr, counts ERROR lines and reports the
// listening address; it ends when the process does.
func (p *Process) readLog(r io.Reader, addrc chan<- string, see func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if see != nil {
			see(line)
		}
		p.mu.Lock()
		p.tail = append(p.tail, line...)
		p.tail = append(p.tail, '\n')
		if len(p.tail) > 2*logTail {
			p.tail = append(p.tail[:0], p.tail[len(p.tail)-logTail:]...)
		}
		if strings.Contains(line, "level=ERROR") {
			p.errors++
		}
		p.mu.Unlock()
		if m := adminListening.FindStringSubmatch(line); m != nil {
			p.mu.Lock()
			p.admin = m[1]
			p.mu.Unlock()
		}
		if m := listening.FindStringSubmatch(line); m != nil {
			select {
			case addrc <- m[1]:
			default:
			}
		}
	}
	_, _ = io.Copy(io.Discard, r)
	p.err = p.cmd.Wait()
	close(p.exited)
}

// waitReady polls /ready until it answers 200.
func (p *Process) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(startTimeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+"/ready", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s\n%s", p.Kind, startTimeout, p.Tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
			return fmt.Errorf("%s exited: %v\n%s", p.Kind, p.err, p.Tail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Tail returns the last lines the server wrote to stderr.
func (p *Process) Tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tail
	if len(t) > logTail {
		t = t[len(t)-logTail:]
	}
	return string(t)
}

// ErrorLines counts the stderr lines logged at level ERROR so far.
func (p *Process) ErrorLines() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errors
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the server's process group and waits for it to
// exit, then SIGKILL after stopTimeout. It removes the scratch directory.
func (p *Process) Stop() error {
	defer p.cleanup()
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	_ = syscall.Kill(-p.PID, syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	<-p.exited
	return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", p.Kind, stopTimeout)
}

func (p *Process) cleanup() {
	if p.ownDir {
		_ = os.RemoveAll(p.dir)
	}
}

// Server describes p to the load scenarios.
func (p *Process) Server() load.Server {
	srv := load.Server{Addr: p.Addr, NewConversation: p.NewConversation, Memory: p.Memory, CPU: p.CPU}
	if p.Kind.isAgentServer() {
		srv.Metric = p.Metric
	}
	return srv
}
