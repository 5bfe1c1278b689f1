package server

import (
	"net/http"
	"testing"
)

// Only a trusted proxy's X-Forwarded-For is believed, and only its right
// part: the right-most hop that is not itself a trusted proxy.
func TestTrustedClient(t *testing.T) {
	tr := newTrusted([]string{"10.0.0.0/8", "192.0.2.7"})
	tests := []struct {
		name, peer string
		xff        []string
		want       string
		rewritten  bool
	}{
		{"no header", "10.1.1.1:5000", nil, "10.1.1.1", false},
		{"untrusted peer's header ignored", "198.51.100.1:5000", []string{"203.0.113.9"}, "198.51.100.1", false},
		{"trusted peer", "10.1.1.1:5000", []string{"203.0.113.9"}, "203.0.113.9", true},
		{"client-chosen left part ignored", "10.1.1.1:5000", []string{"1.2.3.4, 203.0.113.9"}, "203.0.113.9", true},
		{"chain of trusted proxies", "10.1.1.1:5000", []string{"203.0.113.9, 192.0.2.7", "10.2.2.2"}, "203.0.113.9", true},
		{"all hops trusted", "10.1.1.1:5000", []string{"10.3.3.3"}, "10.1.1.1", false},
		{"malformed hop", "10.1.1.1:5000", []string{"203.0.113.9, not-an-ip"}, "10.1.1.1", false},
		{"ipv6 client", "192.0.2.7:443", []string{"2001:db8::1"}, "2001:db8::1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			got, ok := tr.client(r)
			if got != tt.want || ok != tt.rewritten {
				t.Errorf("client = %s, %v; want %s, %v", got, ok, tt.want, tt.rewritten)
			}
		})
	}
	if _, ok := newTrusted(nil).client(&http.Request{RemoteAddr: "10.1.1.1:1", Header: http.Header{"X-Forwarded-For": {"203.0.113.9"}}}); ok {
		t.Error("with no trusted proxies a header was believed")
	}
}
