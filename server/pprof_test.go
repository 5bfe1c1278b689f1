package server

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestServePprofLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "example.com:0", "10.0.0.1:0"} {
		if err := servePprof(addr); err == nil {
			t.Errorf("servePprof(%q) = nil, want a refusal", addr)
		}
	}
}

func TestServePprofHeap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Serve on the test's own listener: closing it and letting servePprof
	// bind the same port again would race with any other listener.
	t.Cleanup(func() { ln.Close() })
	servePprofOn(ln)
	addr := ln.Addr().String()
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "# Stack = ") {
		t.Errorf("heap profile: %d %.200s", resp.StatusCode, b)
	}
	if resp, err := http.Get("http://" + addr + "/debug/pprof/nope"); err != nil || resp.StatusCode != 404 {
		t.Errorf("unknown profile: %v %v", resp, err)
	}
}
