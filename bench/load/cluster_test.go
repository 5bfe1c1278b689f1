package load

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A subscriber counts a message that arrives after a later one as
// reordered, once, and a repeat as a duplicate, not as reordered.
func TestSubscriberCountsReordering(t *testing.T) {
	tests := []struct {
		order          []uint64
		reordered, dup int
	}{
		{[]uint64{0, 1, 2, 3}, 0, 0},
		{[]uint64{1, 0, 2, 3}, 1, 0},
		{[]uint64{3, 2, 1, 0}, 3, 0},
		{[]uint64{0, 2, 2, 1, 3}, 1, 1},
	}
	for _, tt := range tests {
		s := newSubscriber(4)
		for _, seq := range tt.order {
			s.receive(fmt.Appendf(nil, `{"kind":"MessageEvent","text":"bench:%d:%d:"}`, seq, clock()))
		}
		if s.late != tt.reordered || s.dups != tt.dup || s.got != 4 {
			t.Errorf("%v: reordered %d, duplicates %d, got %d; want %d, %d, 4", tt.order, s.late, s.dups, s.got, tt.reordered, tt.dup)
		}
	}
}

// Subscribers spread over Addrs still count every delivery (the baseline
// twice stands for two nodes of one cluster).
func TestFanoutOverAddrs(t *testing.T) {
	srv := startBaseline(t)
	r, err := Fanout(testCtx(t), srv, FanoutParams{Credentials: Credentials{Auth: AuthQuery, Key: testKey}, Subscribers: 6, Messages: 30, Concurrency: 3, Addrs: []string{srv.Addr, srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Delivered != 180 || r.Lost != 0 || r.Duplicates != 0 || r.Reordered != 0 || r.Errors != 0 {
		t.Errorf("result %+v, want 180 delivered in order", r)
	}
}

// Owner tells the node whose count of owned conversations rose when the
// conversation was activated, and refuses an answer it cannot trust.
func TestOwner(t *testing.T) {
	srv := startBaseline(t)
	creds := Credentials{Auth: AuthQuery, Key: testKey}
	tests := []struct {
		name    string
		counts  [][]int64 // before, after
		want    int
		wantErr string
	}{
		{"second node", [][]int64{{1, 4, 0}, {1, 5, 0}}, 1, ""},
		{"a node down", [][]int64{{-1, 0, 2}, {-1, 0, 3}}, 2, ""},
		{"none", [][]int64{{1, 1, 1}, {1, 1, 1}}, -1, "no node took"},
		{"two", [][]int64{{0, 0, 0}, {1, 1, 0}}, -1, "two nodes"},
	}
	for _, tt := range tests {
		call := 0
		n := Nodes{
			Servers: []Server{srv, srv, srv},
			Owned: func(context.Context) ([]int64, error) {
				call++
				return tt.counts[call-1], nil
			},
		}
		got, err := Owner(testCtx(t), n, creds, 0, "c-"+tt.name)
		if got != tt.want || (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: Owner = %d, %v; want %d, error with %q", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
	n := Nodes{Servers: []Server{srv}, Owned: func(context.Context) ([]int64, error) { return nil, errors.New("down") }}
	if _, err := Owner(testCtx(t), n, creds, 0, "c"); err == nil || !strings.Contains(err.Error(), "down") {
		t.Errorf("Owner with a failing Owned: %v, want its error", err)
	}
}
