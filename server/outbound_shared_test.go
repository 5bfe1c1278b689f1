package server

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
)

// event returns a fresh payload shaped like a sealed event.
func event(i int) []byte {
	return fmt.Appendf(nil, `{"id":"%08x-0000-4000-8000-000000000000","kind":"MessageEvent","n":%d}`, i*2654435761, i)
}

func TestSharedFrameSecondSendOnly(t *testing.T) {
	p := event(1)
	if f := sharedFrame(opText, p); f != nil {
		t.Fatal("first send of a payload was framed; a one-client frame must not be copied")
	}
	f := sharedFrame(opText, p)
	if f == nil {
		t.Fatal("second send of the same payload was not framed")
	}
	got := decodeFrames(t, f)
	if len(got) != 1 || got[0].op != opText || got[0].payload != string(p) {
		t.Fatalf("framed = %q, want one text frame of the payload", got)
	}
	if g := sharedFrame(opText, p); &g[0] != &f[0] {
		t.Error("third send did not reuse the shared frame")
	}
	// The same bytes at another address are another payload.
	if f := sharedFrame(opText, bytes.Clone(p)); f != nil {
		t.Error("an equal payload at another address was served from the cache")
	}
	// So is a prefix of the same array, or the same payload under another opcode.
	if f := sharedFrame(opText, p[:len(p)-1]); f != nil {
		t.Error("a shorter slice of the same array was served from the cache")
	}
	for _, small := range [][]byte{nil, []byte("tiny"), make([]byte, maxShared+1)} {
		sharedFrame(opText, small)
		if f := sharedFrame(opText, small); f != nil {
			t.Errorf("%d-byte payload was framed; only %d to %d bytes are", len(small), minShared, maxShared)
		}
	}
}

// Many sockets and many events at once: every socket gets every event,
// intact and in order, whichever path each frame took.
func TestSharedFrameFanout(t *testing.T) {
	const sockets, events = 20, 200
	conns := make([]*recordConn, sockets)
	outs := make([]*outbound, sockets)
	var done sync.WaitGroup
	for i := range outs {
		conns[i] = &recordConn{}
		outs[i] = newOutbound(conns[i], 1<<20, time.Second)
		done.Add(1)
		outs[i].closeSent = done.Done
		outs[i].failed = func(err error) { t.Errorf("write failed: %v", err) }
	}
	payloads := make([][]byte, events)
	for i := range payloads {
		payloads[i] = event(i)
	}
	var wg sync.WaitGroup
	for g := range 4 { // four "conversations" fanning out concurrently, each to its own sockets
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, p := range payloads {
				for s := g; s < sockets; s += 4 {
					outs[s].send(p)
				}
			}
		}()
	}
	wg.Wait()
	for _, o := range outs {
		o.close(core.DisconnectShutdown)
	}
	done.Wait()
	for s, c := range conns {
		var wire []byte
		for _, w := range c.snapshot() {
			wire = append(wire, w...)
		}
		got := decodeFrames(t, wire)
		if len(got) != events+1 {
			t.Fatalf("socket %d got %d frames, want %d", s, len(got), events+1)
		}
		for i, p := range payloads {
			if got[i].op != opText || got[i].payload != string(p) {
				t.Fatalf("socket %d frame %d = %q, want %q", s, i, got[i].payload, p)
			}
		}
	}
}
