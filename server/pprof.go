package server

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"time"
)

// The profiles the admin listener serves under /debug/pprof/ when
// admin.pprof is on: CPU, heap, allocations, goroutines and the rest of
// runtime/pprof's, and an execution trace, with handlers of its own (not
// net/http/pprof, whose import would register them on
// http.DefaultServeMux).
//
//	curl -o cpu.prof 'http://127.0.0.1:8001/debug/pprof/profile?seconds=10'
//	go tool pprof http://127.0.0.1:8001/debug/pprof/heap
//	curl -o out.trace 'http://127.0.0.1:8001/debug/pprof/trace?seconds=2'
//	go tool trace out.trace

// maxProfileSeconds bounds a CPU profile or trace request.
const maxProfileSeconds = 300

// handlePprof adds the profile routes to mux.
func handlePprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/{$}", profileIndex)
	mux.HandleFunc("GET /debug/pprof/profile", cpuProfile)
	mux.HandleFunc("GET /debug/pprof/trace", executionTrace)
	mux.HandleFunc("GET /debug/pprof/{name}", namedProfile)
}

// profileIndex lists the profiles.
func profileIndex(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "profile?seconds=N  CPU profile (default 10 s)")
	fmt.Fprintln(w, "trace?seconds=N    execution trace, for go tool trace (default 1 s)")
	for _, p := range pprof.Profiles() {
		fmt.Fprintf(w, "%-18s %d\n", p.Name(), p.Count())
	}
}

// cpuProfile records a CPU profile for ?seconds= (default 10).
func cpuProfile(w http.ResponseWriter, r *http.Request) {
	record(w, r, 10, pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// executionTrace records an execution trace for ?seconds= (default 1):
// where goroutines waited to run, on what, and for how long.
func executionTrace(w http.ResponseWriter, r *http.Request) {
	record(w, r, 1, trace.Start, trace.Stop)
}

// record runs start on w for ?seconds= (def when absent or not positive,
// at most maxProfileSeconds; a fraction is allowed), or until the client
// goes away, then stop. A recording already running answers 409.
func record(w http.ResponseWriter, r *http.Request, def float64, start func(io.Writer) error, stop func()) {
	secs, err := strconv.ParseFloat(r.URL.Query().Get("seconds"), 64)
	if err != nil || secs <= 0 {
		secs = def
	}
	secs = min(secs, maxProfileSeconds)
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := start(w); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	select {
	case <-time.After(time.Duration(secs * float64(time.Second))):
	case <-r.Context().Done():
	}
	stop()
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
