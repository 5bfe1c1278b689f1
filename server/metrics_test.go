package server

import (
	"errors"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A close code a client chose outside the known set is "other": label
// values stay a small fixed set.
func TestCloseCodeLabels(t *testing.T) {
	tests := []struct {
		sent uint16
		err  error
		want string
	}{
		{4008, nil, "4008"},
		{1001, &gws.CloseError{Code: 1000}, "1001"}, // the server's own code wins
		{0, &gws.CloseError{Code: 1000}, "1000"},
		{0, &gws.CloseError{Code: 4999}, "other"},
		{0, &gws.CloseError{Code: 3000}, "other"},
		{0, errors.New("read: connection reset"), "1006"},
		{0, nil, "1006"},
	}
	for _, tt := range tests {
		if got := closeCodeLabel(closeCode(tt.sent, tt.err)); got != tt.want {
			t.Errorf("sent %d, err %v: label %q, want %q", tt.sent, tt.err, got, tt.want)
		}
	}
}

// The operations view's quantile interpolates within a bucket, like
// PromQL's histogram_quantile, over what was observed between two samples.
func TestHistogramQuantile(t *testing.T) {
	old := histogram{bounds: []float64{.001, .01, .1}, counts: []float64{10, 10, 10}, total: 10}
	cur := histogram{bounds: []float64{.001, .01, .1}, counts: []float64{10, 60, 110}, total: 110}
	tests := []struct {
		q    float64
		want float64
	}{
		{.5, .01},    // rank 50 of 100: the end of the second bucket
		{.25, .0055}, // rank 25: halfway through (.001, .01]
		{.99, .0982}, // rank 99: in (.01, .1]
	}
	for _, tt := range tests {
		got := cur.quantile(old, tt.q)
		if got == nil || *got < tt.want*0.999 || *got > tt.want*1.001 {
			t.Errorf("q%v = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := old.quantile(old, .99); got != nil {
		t.Errorf("nothing observed: q = %v, want nil", *got)
	}
	inf := histogram{bounds: []float64{.001}, counts: []float64{0}, total: 5}
	if got := inf.quantile(histogram{}, .5); got == nil || *got != .001 {
		t.Errorf("all above the last bound: %v, want the last bound", got)
	}
}

// A method a client chose outside the known set is "other"; upgraded
// sockets are not counted as HTTP requests.
func TestHTTPRequestLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newServerMetrics(reg, &Server{})
	m.request("GET /api/conversations/count", "GET", 200, time.Millisecond)
	m.request("unmatched", "PROPFIND", 404, time.Millisecond)
	m.request("unmatched", "BREW", 404, time.Millisecond)
	if got := testutil.ToFloat64(m.requests.WithLabelValues("unmatched", "other", "404")); got != 2 {
		t.Errorf("other methods counted %v, want 2", got)
	}
	if n := testutil.CollectAndCount(m.requests); n != 2 {
		t.Errorf("%d request series, want 2 (the client's methods folded into other)", n)
	}
}
