// Package testbin builds agent-server, its plugin binaries and the
// reference agent runtime for the tests that run them as real processes
// (tests/e2e, tests/browser), laid out as a deployment would be:
// dir/agent-server, dir/agent-echo and dir/plugins/auth-<name>.
package testbin

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
)

// module is the import path the binaries are built from.
const module = "github.com/agent-server/agent-server/cmd/"

// Build compiles the server, agent-echo and the named built-in plugins
// into dir, in parallel. It works from any directory inside the module.
func Build(dir string, plugins ...string) error {
	targets := map[string]string{"agent-server": module + "agent-server", "agent-echo": module + "agent-echo"}
	for _, p := range plugins {
		targets[filepath.Join("plugins", "auth-"+p)] = module + "auth-" + p
	}
	var wg sync.WaitGroup
	errs := make([]error, 0, len(targets))
	var mu sync.Mutex
	for out, pkg := range targets {
		wg.Go(func() {
			if b, err := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg).CombinedOutput(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("go build %s: %v\n%s", pkg, err, b))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
