package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/auditlog"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/memstore"
)

// BenchmarkHandshake measures a cached connect through the whole edge,
// 50 at once as in agent-bench's connect scenario: a raw client sends the
// upgrade with a session key in the query, reads the 101 and the
// full_state frame, sends a close frame and reads the echo. The server
// has the default config with metrics on, an access log and an audit log
// (both discarded) and an in-process key check as its chain; allocs/op is
// the figure to watch, since time on a shared machine is noisy. Run it on
// one CPU, as agent-bench pins the server:
//
//	go test -run '^$' -bench 'BenchmarkHandshake$' -benchmem -cpu 1 ./server/
//
// "direct" serves the listener as the server binary does (direct.go);
// "net-http" serves the same handler through net/http alone, as a TLS
// listener is.
func BenchmarkHandshake(b *testing.B) {
	b.Run("direct", func(b *testing.B) { benchHandshake(b, true) })
	b.Run("net-http", func(b *testing.B) { benchHandshake(b, false) })
}

func benchHandshake(b *testing.B, direct bool) {
	cfg := config.Default()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	chain, err := core.NewChain(core.RouteEvents, sessionKeyAuth{})
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	st := memstore.New()
	sys, err := actors.New(actors.Options{Store: st, Chains: testChains{chain}, Logger: log, Limits: cfg.Limits, Metrics: reg, Audit: auditlog.NewWriter(io.Discard)})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(Options{Config: cfg, Actors: sys, Store: st, Logger: log, Metrics: reg, Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	addr := ts.Listener.Addr().String()
	served := make(chan error, 1)
	ctx, stop := context.WithCancel(context.Background())
	if direct {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addr = ln.Addr().String()
		go func() { served <- srv.Serve(ctx, ln) }()
	} else {
		served <- nil
	}
	b.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			b.Error(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
	})
	e := &edge{srv: srv, sys: sys, store: st, ts: ts}
	var reqs [][]byte
	for range 8 {
		reqs = append(reqs, []byte("GET /sockets/events/"+e.conversation(b)+"?session_api_key="+url.QueryEscape(goodKey)+" HTTP/1.1\r\n"+
			"Host: "+addr+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
	}
	closeFrame := []byte{0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2} // 1000, masked
	one := func(br *bufio.Reader, i int) error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write(reqs[i%len(reqs)]); err != nil {
			return err
		}
		br.Reset(c)
		status, err := br.ReadSlice('\n')
		if err != nil || !strings.Contains(string(status), " 101 ") {
			return fmt.Errorf("status %q: %v", status, err)
		}
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(line) == 2 {
				break
			}
		}
		if err := skipFrame(br); err != nil { // full_state
			return err
		}
		if _, err := c.Write(closeFrame); err != nil {
			return err
		}
		return skipFrame(br) // the close echo
	}
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, 1)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReaderSize(nil, 4096)
			for i := range next {
				if err := one(br, i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// skipFrame reads one unmasked server frame.
func skipFrame(br *bufio.Reader) error {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return err
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return err
		}
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return err
		}
		n = int(binary.BigEndian.Uint64(l[:]))
	}
	_, err := br.Discard(n)
	return err
}
