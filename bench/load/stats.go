package load

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// summarize sorts samples (nanoseconds) and returns their distribution.
func summarize(samples []int64) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	return Summary{
		Count: len(samples),
		P50:   time.Duration(percentile(samples, 0.50)),
		P99:   time.Duration(percentile(samples, 0.99)),
		Max:   time.Duration(samples[len(samples)-1]),
	}
}

// percentile is the nearest-rank percentile of sorted samples.
func percentile(sorted []int64, p float64) int64 {
	rank := int(p*float64(len(sorted))+0.999999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

// samples collects latencies from many goroutines.
type samples struct {
	mu sync.Mutex
	ns []int64
}

func (s *samples) add(d time.Duration) {
	s.mu.Lock()
	s.ns = append(s.ns, int64(d))
	s.mu.Unlock()
}

func (s *samples) summary() Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	return summarize(s.ns)
}

// parallel runs f(i) for i in [0, n), at most par at a time, until done or
// ctx ends. It returns how many ran.
func parallel(ctx context.Context, n, par int, f func(i int)) int {
	if par < 1 {
		par = 1
	}
	var next, ran atomic.Int64
	var wg sync.WaitGroup
	for range min(par, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
				ran.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(ran.Load())
}
