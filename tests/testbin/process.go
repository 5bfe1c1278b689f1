package testbin

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// listening is the log line a server writes once its listener is up, in
// the text (addr=H:P) and JSON ("addr":"H:P") formats.
var listening = regexp.MustCompile(`(?:msg=listening addr=|"msg":"listening".*"addr":")([0-9.:\[\]]+)`)

// adminListening is the log line of the admin listener (/metrics).
var adminListening = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)

// Process is one running agent-server, started by Start.
type Process struct {
	Name   string
	Addr   string // host:port it listens on
	admin  string // host:port of its admin listener, once logged
	cmd    *exec.Cmd
	mu     sync.Mutex
	log    bytes.Buffer // everything it wrote to stderr
	exited chan struct{}
	err    error
}

// Start runs `<dir>/agent-server serve --config config --addr 127.0.0.1:0`
// (and its admin listener on a free port too)
// in cwd with exactly env, and returns once it listens (not once it is
// ready: see WaitReady). name labels it in errors.
func Start(dir, name, config, cwd string, env []string) (*Process, error) {
	cmd := exec.Command(dir+"/agent-server", "serve", "--config", config, "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
	cmd.Dir, cmd.Env = cwd, env
	return StartCommand(cmd, name)
}

// StartCommand runs cmd, an agent-server serving however it was built or
// installed, and returns once it listens, as Start does.
func StartCommand(cmd *exec.Cmd, name string) (*Process, error) {
	p := &Process{Name: name, cmd: cmd, exited: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			if m := adminListening.FindStringSubmatch(line); m != nil {
				p.admin = m[1]
			}
			p.mu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.Addr = <-addr:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%s exited before listening: %v\n%s", name, p.err, p.Log())
	case <-time.After(60 * time.Second):
		p.Kill()
		return nil, fmt.Errorf("%s did not listen within 60s\n%s", name, p.Log())
	}
}

// WaitReady waits up to d for /ready to answer 200.
func (p *Process) WaitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if resp, err := http.Get("http://" + p.Addr + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %v\n%s", p.Name, p.err, p.Log())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s\n%s", p.Name, d, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Log returns what the process has written to stderr so far.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Exited is closed once the process has exited; Err then says how.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the process's exit error, once Exited is closed.
func (p *Process) Err() error { return p.err }

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// Kill SIGKILLs the process (if it still runs) and waits for it.
func (p *Process) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop sends SIGTERM and waits up to d for the exit.
func (p *Process) Stop(d time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running %s after SIGTERM", p.Name, d)
	}
}

// AdminURL returns the http URL of path on the process's admin listener
// (/metrics), or "" when it has none.
func (p *Process) AdminURL(path string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.admin == "" {
		return ""
	}
	return "http://" + p.admin + path
}

// URL returns the http URL of path on the process.
func (p *Process) URL(path string) string { return "http://" + p.Addr + path }
