package server

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"
)

// PprofEnv names the environment variable that turns on the profiling
// listener: AGENT_PPROF_ADDR=127.0.0.1:6060 serves CPU, heap,
// allocation and goroutine profiles on that address, for benchmarking only.
// It is off unless set, accepts only a loopback address, and uses its own
// handlers on its own listener (not net/http/pprof, whose import would
// register them on http.DefaultServeMux). The name is outside the
// AGENT_SERVER_ prefix, which the config loader reads as config keys.
//
//	curl -o cpu.prof 'http://127.0.0.1:6060/debug/pprof/profile?seconds=10'
//	curl -o heap.prof http://127.0.0.1:6060/debug/pprof/heap
//	go tool pprof bin/agent-server cpu.prof
const PprofEnv = "AGENT_PPROF_ADDR"

// maxProfileSeconds bounds a CPU profile request.
const maxProfileSeconds = 300

func init() {
	addr := os.Getenv(PprofEnv)
	if addr == "" {
		return
	}
	if err := servePprof(addr); err != nil {
		fmt.Fprintf(os.Stderr, "agent-server: %s: %v\n", PprofEnv, err)
		os.Exit(2)
	}
}

// servePprof listens on addr, which must be a loopback address, and serves
// the profiles there in the background.
func servePprof(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: only a loopback IP address is accepted", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "agent-server: profiling on http://%s/debug/pprof/ (%s)\n", ln.Addr(), PprofEnv)
	servePprofOn(ln)
	return nil
}

// servePprofOn serves the profiles on ln in the background, until ln closes.
func servePprofOn(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/profile", cpuProfile)
	mux.HandleFunc("GET /debug/pprof/{name}", namedProfile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
}

// cpuProfile records a CPU profile for ?seconds= (default 10).
func cpuProfile(w http.ResponseWriter, r *http.Request) {
	secs, err := strconv.Atoi(r.URL.Query().Get("seconds"))
	if err != nil || secs <= 0 {
		secs = 10
	}
	secs = min(secs, maxProfileSeconds)
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	select {
	case <-time.After(time.Duration(secs) * time.Second):
	case <-r.Context().Done():
	}
	pprof.StopCPUProfile()
}

// namedProfile writes a runtime profile (heap, allocs, goroutine, ...);
// ?gc=1 collects garbage first, ?debug=1 writes text, which for heap ends
// with the runtime's memory statistics.
func namedProfile(w http.ResponseWriter, r *http.Request) {
	p := pprof.Lookup(r.PathValue("name"))
	if p == nil {
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("gc") == "1" {
		runtime.GC()
	}
	debug, _ := strconv.Atoi(r.URL.Query().Get("debug"))
	if debug == 0 {
		w.Header().Set("Content-Type", "application/octet-stream")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	_ = p.WriteTo(w, debug)
}
