package linewriter

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// countingFile counts the Writes that reach the file: each is a syscall.
type countingFile struct {
	f     *os.File
	calls atomic.Int64
}

func (c *countingFile) Write(p []byte) (int, error) {
	c.calls.Add(1)
	return c.f.Write(p)
}

// BenchmarkLines writes 200-byte lines from N goroutines straight to a file
// (one write syscall a line, as the logs did) and through a Writer, to
// /dev/null and to a pipe drained by another goroutine (stderr read by a
// log collector), and reports the write syscalls per line and the CPU the
// process spent per line (user and system, the draining goroutine's and
// the flusher's included; ns/op is wall time). With work, each
// goroutine hashes 64 KiB (about 40 µs of CPU) before each line, a line's
// share of a handshake; without, the lines come as fast as they can.
func BenchmarkLines(b *testing.B) {
	line := []byte(strings.Repeat("x", 199) + "\n")
	work := make([]byte, 64<<10)
	outputs := []struct {
		name string
		open func(b *testing.B) *os.File
	}{
		{"devnull", func(b *testing.B) *os.File {
			f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { f.Close() })
			return f
		}},
		{"pipe", func(b *testing.B) *os.File {
			r, w, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			drained := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, r); close(drained) }()
			b.Cleanup(func() { w.Close(); <-drained; r.Close() })
			return w
		}},
	}
	for _, out := range outputs {
		for _, goroutines := range []int{1, 2, 16} {
			for _, withWork := range []bool{false, true} {
				for _, batched := range []bool{false, true} {
					via := map[bool]string{false: "direct", true: "linewriter"}[batched]
					b.Run(fmt.Sprintf("%s/goroutines=%d/work=%v/%s", out.name, goroutines, withWork, via), func(b *testing.B) {
						var w []byte
						if withWork {
							w = work
						}
						benchLines(b, out.open(b), goroutines, line, w, batched)
					})
				}
			}
		}
	}
}

// benchLines writes b.N lines to f from goroutines goroutines, each hashing
// work before each line, through a Writer when batched.
func benchLines(b *testing.B, f *os.File, goroutines int, line, work []byte, batched bool) {
	cf := &countingFile{f: f}
	var dst io.Writer = cf
	var lw *Writer
	if batched {
		lw = New(cf, 0)
		dst = lw
	}
	b.SetBytes(int64(len(line)))
	b.ResetTimer()
	cpu := cpuTime(b)
	var wg sync.WaitGroup
	for g := range goroutines {
		n := b.N / goroutines
		if g < b.N%goroutines {
			n++
		}
		wg.Go(func() {
			for range n {
				if work != nil {
					_ = sha256.Sum256(work)
				}
				if _, err := dst.Write(line); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if lw != nil {
		if err := lw.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/line")
	b.ReportMetric(float64(cf.calls.Load())/float64(b.N), "writes/line")
}

// cpuTime is the CPU time the process has used, user and system, in ns.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
