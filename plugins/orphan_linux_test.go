//go:build linux

package plugins_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNoPluginOutlivesAKilledServer SIGKILLs a server process, which gets no
// chance to stop its plugins, and checks that they die with it.
func TestNoPluginOutlivesAKilledServer(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+binDir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()

	// Read in a goroutine so a helper that never prints fails the test
	// instead of hanging it; the deferred Kill ends the read.
	type result struct {
		line string
		err  error
	}
	said := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		said <- result{line, err}
	}()
	var line string
	select {
	case r := <-said:
		line = r.line
		if r.err != nil || !strings.HasPrefix(line, "pids ") {
			t.Fatalf("helper said %q, %v", line, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper printed no pids within 30s")
	}
	var pids []int
	for _, f := range strings.Fields(strings.TrimPrefix(line, "pids ")) {
		pid, _ := strconv.Atoi(f)
		pids = append(pids, pid)
	}
	if len(pids) != 10 { // the default chains use five plugins, two processes each
		t.Fatalf("pids %v, want 10", pids)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	waitFor(t, 30*time.Second, func() bool {
		for _, pid := range pids {
			if alive(pid) {
				return false
			}
		}
		return true
	})
}

// alive reports whether pid is a live process (a zombie counts as dead).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
