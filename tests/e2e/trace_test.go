package e2e

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace receiver run by the test on loopback:
// the real protocol (protobuf over HTTP), since Debian ships no
// OpenTelemetry collector to start instead.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []receivedSpan
}

// receivedSpan is one exported span and the service that exported it.
type receivedSpan struct {
	service string
	auth    string // the export's Authorization header
	span    *tracepb.Span
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var msg coltrace.ExportTraceServiceRequest
		if err != nil || req.URL.Path != "/v1/traces" || proto.Unmarshal(body, &msg) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range msg.GetResourceSpans() {
			service := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					r.spans = append(r.spans, receivedSpan{service: service, auth: req.Header.Get("Authorization"), span: sp})
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

// find returns the first span named name in trace, or nil.
func (r *otlpReceiver) find(trace, name string) *receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range r.spans {
		if s.span.GetName() == name && hex.EncodeToString(s.span.GetTraceId()) == trace {
			return &r.spans[i]
		}
	}
	return nil
}

// A handshake traced from the client's traceparent: the server exports its
// handshake span and a child per plugin call, and the plugin process, told
// only the trace context, exports its own span into the same trace (its
// exporter settings come from its plugin config). The access log line
// carries the trace ID; a REST request is traced too.
func TestTracesReachIntoPlugins(t *testing.T) {
	recv := startOTLPReceiver(t)
	cfg := keyCfg() + "  chains: {events: [header], rest: [header], runtime: [header]}\n" +
		"storage:\n  driver: memory\ntracing:\n  enabled: true\n" +
		"plugins:\n  instances:\n    header:\n      config:\n        tracing: {endpoint: '" + recv.URL + "'}\n"
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(withPluginDir(cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := launch(t, path, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "AGENT_SERVER_AUTH__RPC_TIMEOUT=10s",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.URL, "OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20collector-secret"})
	id := s.createConversation(t, key)

	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	h := authH()
	h.Set("traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	c, _, err := s.dial(t, "/sockets/events/"+id, h)
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, c)
	c.Close()
	const restTrace = "0af7651916cd43dd8448eb211c80319c"
	req, _ := http.NewRequest("GET", s.url("/api/conversations/count"), nil)
	req.Header.Set("X-Session-API-Key", key)
	req.Header.Set("traceparent", "00-"+restTrace+"-b7ad6b7169203331-01")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET count: %v %v", resp, err)
	}

	var handshake, call, plugin, rest *receivedSpan
	deadline := time.Now().Add(20 * time.Second)
	for handshake == nil || call == nil || plugin == nil || rest == nil {
		if time.Now().After(deadline) {
			t.Fatalf("spans in trace %s after 20s: handshake %v, plugin call %v, plugin's own %v, rest %v\n%s",
				trace, handshake != nil, call != nil, plugin != nil, rest != nil, s.Log())
		}
		time.Sleep(100 * time.Millisecond)
		handshake, call = recv.find(trace, "websocket.handshake"), recv.find(trace, "auth.plugin")
		plugin, rest = recv.find(trace, "plugin.authenticate"), recv.find(restTrace, "rest.request")
	}
	if handshake.service != "agent-server" || call.service != "agent-server" || plugin.service != "auth-header" {
		t.Errorf("services: handshake %q, plugin call %q, plugin's span %q; want agent-server, agent-server, auth-header", handshake.service, call.service, plugin.service)
	}
	// The server's OTEL_EXPORTER_OTLP_HEADERS reach its own exports only:
	// the plugin runs with an empty environment.
	if handshake.auth != "Bearer collector-secret" || plugin.auth != "" {
		t.Errorf("Authorization of the exports: server %q, plugin %q; want the server's only", handshake.auth, plugin.auth)
	}
	if hex.EncodeToString(handshake.span.GetParentSpanId()) != "00f067aa0ba902b7" {
		t.Errorf("handshake span's parent = %x, want the client's span", handshake.span.GetParentSpanId())
	}
	if string(call.span.GetParentSpanId()) != string(handshake.span.GetSpanId()) {
		t.Errorf("plugin call's parent = %x, want the handshake span %x", call.span.GetParentSpanId(), handshake.span.GetSpanId())
	}
	if string(plugin.span.GetParentSpanId()) != string(call.span.GetSpanId()) {
		t.Errorf("the plugin's span's parent = %x, want the host's call span %x", plugin.span.GetParentSpanId(), call.span.GetSpanId())
	}
	for _, sp := range []*receivedSpan{handshake, call, plugin, rest} {
		for _, a := range sp.span.GetAttributes() {
			if v := fmt.Sprint(a.GetValue()); strings.Contains(v, key) {
				t.Errorf("span %s attribute %s holds the key", sp.span.GetName(), a.GetKey())
			}
		}
	}
	s.waitLog(t, "trace_id="+trace, 5*time.Second)
	for _, line := range strings.Split(s.Log(), "\n") {
		if strings.Contains(line, `msg="http request"`) && strings.Contains(line, "/sockets/events/") && !strings.Contains(line, "trace_id="+trace) {
			t.Errorf("the handshake's access line has no trace ID: %s", line)
		}
	}
}
