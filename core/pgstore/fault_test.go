package pgstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/pgstore/pgtest"
	"github.com/agent-server/agent-server/core/storetest"
)

// fault is when the proxy cuts a connection.
type fault int

const (
	none            fault = iota
	onCopy                // as COPY data arrives: mid-transaction
	beforeCommit          // as COMMIT arrives, before the server sees it
	afterCommitSent       // once the server has COMMIT, before the client hears back
)

// proxy forwards loopback connections to PostgreSQL and, once armed, cuts
// the connections that reach its fault point, times times. It reads the
// frontend protocol's message framing to find COPY data ('d') and COMMIT
// (a simple query, which is how pgx sends it).
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	armed  fault
	times  int
	fired  chan struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

// arm makes the next times connections reaching f be cut there.
func (p *proxy) arm(f fault, times int) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed, p.times, p.fired = f, times, make(chan struct{})
	return p.fired
}

// take reports whether the armed fault is f, counting it down if so.
func (p *proxy) take(f fault) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.armed != f || f == none {
		return false
	}
	if p.times--; p.times == 0 {
		p.armed = none
	}
	select {
	case <-p.fired:
	default:
		close(p.fired)
	}
	return true
}

func (p *proxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	defer client.Close()
	defer server.Close()
	var mute atomic.Bool // set: the server's answers are no longer relayed
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 && !mute.Load() {
				if _, werr := client.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		client.Close() // the server hung up: so does the client's side
	}()
	// The startup message has no type byte.
	var n [4]byte
	if _, err := io.ReadFull(client, n[:]); err != nil {
		return
	}
	rest := make([]byte, binary.BigEndian.Uint32(n[:])-4)
	if _, err := io.ReadFull(client, rest); err != nil {
		return
	}
	if _, err := server.Write(append(n[:], rest...)); err != nil {
		return
	}
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(client, hdr[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
		if _, err := io.ReadFull(client, body); err != nil {
			return
		}
		commit := hdr[0] == 'Q' && strings.EqualFold(string(bytes.TrimRight(body, "\x00")), "commit")
		switch {
		case hdr[0] == 'd' && p.take(onCopy), commit && p.take(beforeCommit):
			return // cut: the server never sees it
		case commit && p.take(afterCommitSent):
			mute.Store(true)
			_, _ = server.Write(append(hdr[:], body...))
			time.Sleep(300 * time.Millisecond) // the server commits; its answer is never relayed
			return
		}
		if _, err := server.Write(append(hdr[:], body...)); err != nil {
			return
		}
	}
}

// A connection dropped mid-transaction or mid-commit: the batch is wholly
// in or wholly out, and each element is answered accordingly. A drop while
// COMMIT is in flight is read back before answering; a batch known not to
// be stored (cut before COMMIT, or read back as missing) is tried once more
// on a fresh connection.
func TestConnectionDroppedMidTransaction(t *testing.T) {
	pg := pgtest.Start(t)
	tests := []struct {
		name      string
		fault     fault
		times     int
		wantLands bool
	}{
		{"every attempt cut during COPY", onCopy, 2, false},
		{"every attempt cut before COMMIT", beforeCommit, 2, false},
		{"one attempt cut before COMMIT, the retry lands", beforeCommit, 1, true},
		{"cut after COMMIT was sent: read back, stored", afterCommitSent, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := pg.Database(t)
			direct := open(t, dsn)
			p := newProxy(t, fmt.Sprintf("127.0.0.1:%d", pg.Port))
			viaProxy := open(t, strings.Replace(dsn, fmt.Sprintf(":%d/", pg.Port), fmt.Sprintf(":%d/", p.ln.Addr().(*net.TCPAddr).Port), 1))
			ctx := context.Background()
			a, b := storetest.NewConversation(t, direct), storetest.NewConversation(t, direct)
			t0 := time.Now().UTC()
			batch := []core.Append{
				{ConversationID: a, Events: []*core.Event{storetest.Sealed(t, 1, t0, `{}`), storetest.Sealed(t, 2, t0, `{}`)}},
				{ConversationID: b, Events: []*core.Event{storetest.Sealed(t, 1, t0, `{}`)}},
			}
			fired := p.arm(tt.fault, tt.times)
			errs := viaProxy.AppendBatch(ctx, batch)
			select {
			case <-fired:
			default:
				t.Fatal("the fault never fired: the test proves nothing")
			}
			for i, err := range errs {
				if tt.wantLands && err != nil {
					t.Errorf("element %d: %v, want it acknowledged (it is stored)", i, err)
				}
				if !tt.wantLands && !errors.Is(err, core.ErrUnavailable) {
					t.Errorf("element %d: %v, want a failure wrapping ErrUnavailable (nothing is stored)", i, err)
				}
			}
			for id, n := range map[string]uint64{a: 2, b: 1} {
				want := uint64(0)
				if tt.wantLands {
					want = n
				}
				got, err := direct.LastSeq(ctx, id)
				evs, _ := direct.Events(ctx, id, 0, 0)
				if err != nil || got != want || uint64(len(evs)) != want {
					t.Errorf("conversation %s: last seq %d, %d events (%v); want %d: wholly in or wholly out", id, got, len(evs), err, want)
				}
			}
			// The store goes on working through the proxy.
			next := uint64(1)
			if tt.wantLands {
				next = 3
			}
			if err := viaProxy.AppendEvents(ctx, a, []*core.Event{storetest.Sealed(t, next, t0, `{}`)}); err != nil {
				t.Errorf("append after the fault: %v", err)
			}
		})
	}
}
