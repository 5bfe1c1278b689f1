//go:build linux

package plugins_test

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/agent-server/agent-server/core/config"
)

// Scheduling policies, as /proc reports them.
const (
	schedOther = 0
	schedBatch = 3
)

// Plugin processes start in the class plugins.scheduling names, every
// thread of theirs included, and the host's own threads stay in the
// normal class: the thread that forked them was set for the start only.
func TestPluginsStartInTheirSchedulingClass(t *testing.T) {
	for _, tc := range []struct {
		scheduling string
		want       int
	}{
		{config.SchedulingBatch, schedBatch},
		{config.SchedulingNormal, schedOther},
	} {
		t.Run(tc.scheduling, func(t *testing.T) {
			cfg := testConfig(t, false)
			cfg.Plugins.Scheduling = tc.scheduling
			h, _ := startHost(t, cfg)
			var pids []int
			for _, hl := range h.Health() {
				for _, p := range hl.Processes {
					pids = append(pids, p.PID)
				}
			}
			if len(pids) == 0 {
				t.Fatal("no plugin process running")
			}
			for _, pid := range pids {
				for tid, policy := range threadPolicies(t, pid) {
					if policy != tc.want {
						t.Errorf("plugin process %d, thread %d: policy %d, want %d", pid, tid, policy, tc.want)
					}
				}
			}
			for tid, policy := range threadPolicies(t, os.Getpid()) {
				if policy != schedOther {
					t.Errorf("host thread %d: policy %d, want %d (normal)", tid, policy, schedOther)
				}
			}
		})
	}
}

// threadPolicies returns the scheduling policy of each thread of pid: the
// 41st field of /proc/PID/task/TID/stat.
func threadPolicies(t *testing.T, pid int) map[int]int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int]int, len(tasks))
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
		if err != nil {
			continue // the thread ended
		}
		fields := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:]) // from field 3
		if len(fields) < 39 {
			t.Fatalf("thread %d of %d: short stat %q", tid, pid, stat)
		}
		policy, err := strconv.Atoi(string(fields[41-3]))
		if err != nil {
			t.Fatalf("thread %d of %d: policy %q: %v", tid, pid, fields[41-3], err)
		}
		out[tid] = policy
	}
	return out
}
