package actors

import (
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	tests := []struct {
		name  string
		rate  float64
		burst int
		at    []time.Duration // when each frame arrives
		want  []bool
	}{
		{"burst then refused", 1, 3, []time.Duration{0, 0, 0, 0}, []bool{true, true, true, false}},
		{"refills at the rate", 2, 1, []time.Duration{0, 0, 500 * time.Millisecond, 600 * time.Millisecond}, []bool{true, false, true, false}},
		{"never above the burst", 10, 2, []time.Duration{0, 10 * time.Second, 10 * time.Second, 10 * time.Second}, []bool{true, true, true, false}},
		{"zero rate never limits", 0, 1, []time.Duration{0, 0, 0}, []bool{true, true, true}},
		{"zero burst is one", 1, 0, []time.Duration{0, 0}, []bool{true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTokenBucket(tt.rate, tt.burst)
			for i, at := range tt.at {
				if got := b.take(t0.Add(at)); got != tt.want[i] {
					t.Fatalf("frame %d at %s: take = %v, want %v", i, at, got, tt.want[i])
				}
			}
		})
	}
}
