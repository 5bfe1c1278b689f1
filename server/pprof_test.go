package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The admin handler serves health always, metrics when given a handler,
// and the profiles only with pprof on.
func TestAdminHandler(t *testing.T) {
	s := newEdge(t, nil).srv
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "agent_server_test_total", Help: "t"}))
	tests := []struct {
		name    string
		metrics bool
		pprof   bool
		path    string
		code    int
		body    string
	}{
		{"alive", false, false, "/alive", 200, `"ok"`},
		{"health", false, false, "/health", 200, `"ok"`},
		{"ready", false, false, "/ready", 200, `"ready"`},
		{"metrics", true, false, "/metrics", 200, "agent_server_test_total 0"},
		{"no metrics", false, false, "/metrics", 404, ""},
		{"pprof off", true, false, "/debug/pprof/heap", 404, ""},
		{"heap", true, true, "/debug/pprof/heap?debug=1", 200, "# Stack = "},
		{"index", true, true, "/debug/pprof/", 200, "goroutine"},
		{"unknown profile", true, true, "/debug/pprof/nope", 404, ""},
		{"trace", true, true, "/debug/pprof/trace?seconds=0.05", 200, "go 1."},
		{"trace with pprof off", true, false, "/debug/pprof/trace", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mh http.Handler
			if tt.metrics {
				mh = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
			}
			srv := httptest.NewServer(s.AdminHandler(mh, tt.pprof))
			defer srv.Close()
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code || !strings.Contains(string(b), tt.body) {
				t.Errorf("GET %s = %d %.200s, want %d with %q", tt.path, resp.StatusCode, b, tt.code, tt.body)
			}
		})
	}
}
