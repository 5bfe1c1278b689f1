package plugins

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
	"github.com/agent-server/agent-server/tests/testcert"
)

// recorder is an in-process Plugin that records what it was sent.
type recorder struct {
	got    atomic.Pointer[core.Request]
	cfg    atomic.Pointer[ConfigureRequest]
	result core.Result
	panic  bool
}

func (r *recorder) Info(context.Context) Info {
	return Info{Name: "rec", Version: "9", WantsKeys: true, Inputs: Inputs{
		QueryParams: []string{"token"}, Headers: []string{"x-token"}, Subprotocol: true, FirstMessage: true, ClientCertificate: true,
	}}
}

// configuredRecorder declares its inputs after Configure, from its config.
type configuredRecorder struct {
	recorder
	header string
}

func (r *configuredRecorder) Configure(ctx context.Context, req ConfigureRequest) error {
	var c struct{ Header string }
	if err := req.DecodeConfig(&c); err != nil {
		return err
	}
	r.header = c.Header
	return nil
}

func (r *configuredRecorder) ConfiguredInputs() Inputs {
	return Inputs{Headers: []string{r.header}}
}

func (r *recorder) Configure(_ context.Context, req ConfigureRequest) error {
	r.cfg.Store(&req)
	var c struct{ Fail bool }
	if err := req.DecodeConfig(&c); err != nil {
		return err
	}
	if c.Fail {
		return errInvalid
	}
	return nil
}

var errInvalid = &json.UnsupportedValueError{Str: "config says fail"}

func (r *recorder) Authenticate(_ context.Context, req *core.Request) core.Result {
	if r.panic {
		panic("boom")
	}
	r.got.Store(req)
	return r.result
}

// grpcPair serves impl over real gRPC in this process and returns the host's
// stub for it.
func grpcPair(t *testing.T, impl Plugin) *grpcClient {
	t.Helper()
	client, _ := goplugin.TestPluginGRPCConn(t, false, goplugin.PluginSet{pluginKey: &grpcPlugin{srv: &grpcServer{impl: impl, log: Logger(), tracing: &sdkTracing{}}}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(pluginKey)
	if err != nil {
		t.Fatal(err)
	}
	return raw.(*grpcClient)
}

func TestGRPCRoundTrip(t *testing.T) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := &recorder{result: core.Allowed(&core.Principal{Subject: "s", Scopes: []string{"c1"}, Claims: map[string]string{"a": "b"}, Expiry: exp})}
	c := grpcPair(t, rec)
	ctx := context.Background()

	info, err := c.info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := rec.Info(ctx)
	want.Inputs.Headers = []string{"X-Token"} // the host canonicalises header names
	if !reflect.DeepEqual(info, want) {
		t.Errorf("info = %+v, want %+v", info, want)
	}

	in, err := c.configure(ctx, ConfigureRequest{Config: json.RawMessage(`{"fail":false}`), KeyDigests: []string{"sha256:ab"}})
	if err != nil || in != nil {
		t.Fatalf("configure = %v, %v; want no error and no inputs (Info's stand)", in, err)
	}
	if got := rec.cfg.Load(); string(got.Config) != `{"fail":false}` || got.KeyDigests[0] != "sha256:ab" {
		t.Errorf("configure got %+v", got)
	}
	if _, err := c.configure(ctx, ConfigureRequest{Config: json.RawMessage(`{"fail":true}`)}); err == nil || !strings.Contains(err.Error(), "config says fail") {
		t.Errorf("failing configure: %v", err)
	}

	ca := testcert.NewCA(t, "ca")
	leaf := ca.Issue(t, testcert.Spec{CommonName: "client", Client: true})
	req := &core.Request{
		Route: core.RouteEvents, Method: "GET", Path: "/p", PathParams: map[string]string{"id": "1"},
		Query:      map[string][]string{"token": {"t1", "t2"}, "session_api_key": {"secret"}},
		Header:     http.Header{"X-Token": {"h"}, "Authorization": {"Bearer secret"}, "Cookie": {"c"}},
		RemoteAddr: "1.2.3.4:5", Subprotocols: []string{"p1"}, Origin: "https://o", FirstMessage: []byte("hi"),
		ClientCertificates: []*x509.Certificate{leaf.Cert, ca.Cert},
	}
	res := c.authenticate(ctx, req, info.Inputs)
	if res.Decision != core.Allow || !reflect.DeepEqual(res.Principal, rec.result.Principal) {
		t.Errorf("result = %+v %+v", res, res.Principal)
	}
	got := rec.got.Load()
	wantReq := &core.Request{
		Route: core.RouteEvents, Method: "GET", Path: "/p", PathParams: map[string]string{"id": "1"},
		Query:      map[string][]string{"token": {"t1", "t2"}},
		Header:     http.Header{"X-Token": {"h"}},
		RemoteAddr: "1.2.3.4:5", Subprotocols: []string{"p1"}, Origin: "https://o", FirstMessage: []byte("hi"),
		ClientCertificates: []*x509.Certificate{leaf.Cert, ca.Cert},
	}
	if !reflect.DeepEqual(got, wantReq) {
		t.Errorf("plugin saw %+v\nwant only its declared inputs: %+v", got, wantReq)
	}

	withMaxAge := core.Denied("nope")
	withMaxAge.MaxAge = -1
	allowFor := core.Allowed(&core.Principal{Subject: "s"})
	allowFor.MaxAge = 3 * time.Second
	for _, r := range []core.Result{core.Abstained(), core.Denied("nope"), core.Failed(errInvalid), core.FailedByRequest(errInvalid), withMaxAge, allowFor} {
		rec.result = r
		got := c.authenticate(ctx, req, info.Inputs)
		if got.Decision != r.Decision || got.Reason != r.Reason || got.RequestFault != r.RequestFault || got.MaxAge != r.MaxAge {
			t.Errorf("sent %+v, got %+v", r, got)
		}
	}
	// Without the declared input, the certificates are not sent.
	noCert := info.Inputs
	noCert.ClientCertificate = false
	c.authenticate(ctx, req, noCert)
	if got := rec.got.Load(); got.ClientCertificates != nil {
		t.Errorf("undeclared certificates were sent: %d", len(got.ClientCertificates))
	}
	rec.result = core.Result{Decision: core.Allow} // no principal
	if got := c.authenticate(ctx, req, info.Inputs); got.Decision != core.Error {
		t.Errorf("allow without principal: got %s, want error", got.Decision)
	}
}

// A plugin whose inputs depend on its config answers them from Configure.
func TestConfiguredInputsRoundTrip(t *testing.T) {
	c := grpcPair(t, &configuredRecorder{})
	in, err := c.configure(context.Background(), ConfigureRequest{Config: json.RawMessage(`{"header":"x-team"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if in == nil || !reflect.DeepEqual(in.Headers, []string{"X-Team"}) {
		t.Errorf("configured inputs = %+v, want the header X-Team", in)
	}
}

func TestGRPCServerRecoversPanic(t *testing.T) {
	old := pluginStderr
	t.Cleanup(func() { pluginStderr = old })
	var logs strings.Builder
	pluginStderr = &lineLogger{log: slog.New(slog.NewTextHandler(&logs, nil)), level: slog.LevelError, msg: "stderr"}
	c := grpcPair(t, &recorder{panic: true})
	res := c.authenticate(context.Background(), &core.Request{}, Inputs{})
	if res.Decision != core.Error || !strings.Contains(res.Err.Error(), "panicked") {
		t.Errorf("got %+v, want an error about the panic", res)
	}
	if !strings.Contains(logs.String(), "boom") {
		t.Errorf("panic not logged: %q", logs.String())
	}
}

func TestInputsPresent(t *testing.T) {
	in := Inputs{QueryParams: []string{"q"}, Headers: []string{"X-H"}}
	tests := []struct {
		name string
		req  *core.Request
		want bool
	}{
		{"nothing", &core.Request{}, false},
		{"empty query", &core.Request{Query: map[string][]string{"q": {""}}}, false},
		{"query", &core.Request{Query: map[string][]string{"q": {"", "v"}}}, true},
		{"blank header", &core.Request{Header: http.Header{"X-H": {"  "}}}, false},
		{"header any case", &core.Request{Header: http.Header{"x-h": {"v"}}}, true},
		{"other header", &core.Request{Header: http.Header{"X-Other": {"v"}}}, false},
		{"subprotocol not declared", &core.Request{Subprotocols: []string{"p"}}, false},
	}
	for _, tc := range tests {
		if got := in.present(tc.req); got != tc.want {
			t.Errorf("%s: present = %v, want %v", tc.name, got, tc.want)
		}
	}
	sp := Inputs{Subprotocol: true, FirstMessage: true}
	if sp.present(&core.Request{}) || !sp.present(&core.Request{Subprotocols: []string{"p"}}) || !sp.present(&core.Request{FirstMessage: []byte("m")}) {
		t.Error("subprotocol / first message presence wrong")
	}
	cert := Inputs{ClientCertificate: true}
	if cert.empty() || cert.present(&core.Request{}) || !cert.present(&core.Request{ClientCertificates: []*x509.Certificate{{}}}) {
		t.Error("client certificate presence wrong")
	}
}

func TestKeyDigests(t *testing.T) {
	got, err := keyDigests([]string{"k", "sha256:" + strings.Repeat("AB", 32)})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"sha256:8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a",
		"sha256:" + strings.Repeat("ab", 32),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("digests = %v, want %v", got, want)
	}
	if _, err := keyDigests([]string{"ok", ""}); err == nil || !strings.Contains(err.Error(), "key 1") {
		t.Errorf("empty key: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	ms := time.Millisecond
	for n, want := range map[int]time.Duration{1: 100 * ms, 2: 200 * ms, 3: 400 * ms, 5: 1000 * ms, 50: 1000 * ms} {
		if got := backoff(100*ms, time.Second, n); got != want {
			t.Errorf("backoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestDecodeConfigRefusesUnknownFields(t *testing.T) {
	var v struct {
		A int `json:"a"`
	}
	if err := (ConfigureRequest{}).DecodeConfig(&v); err != nil {
		t.Errorf("empty config: %v", err)
	}
	if err := (ConfigureRequest{Config: json.RawMessage(`{"b":1}`)}).DecodeConfig(&v); err == nil {
		t.Error("unknown field accepted")
	}
}

// loopbackStream serves rec with this SDK's gRPC server on loopback and
// returns the host's stream to it, all closed when tb ends.
func loopbackStream(tb testing.TB, rec *recorder) *streamClient {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := newGRPCServer(nil)
	authpb.RegisterAuthenticatorServer(s, &grpcServer{impl: rec, log: slog.New(slog.DiscardHandler)})
	go s.Serve(lis)
	tb.Cleanup(s.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	st, err := openStream(authpb.NewAuthenticatorClient(cc), func() {})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.close(errors.New("the test is over")) })
	return st
}

// A plugin served by this SDK receives messages up to maxRecvBytes, past
// gRPC's default 4 MiB, which ends the stream and every call on it: a
// host with no bound of its own (an older one) sends such a message when
// large calls queue together.
func TestPluginReceivesPastGRPCDefault(t *testing.T) {
	rec := &recorder{result: core.Allowed(&core.Principal{Subject: "s"})}
	st := loopbackStream(t, rec)
	big := strings.Repeat("x", 6<<20)
	flat := &authpb.Request{Route: "rest", Header: []string{"X-Token", big}}
	res := st.authenticate(context.Background(), time.Time{}, flat, proto.Size(flat), func() {})
	if res.Decision != core.Allow {
		t.Fatalf("a 6 MiB call: got %s (%v), want allow", res.Decision, res.Err)
	}
	if got := HeaderValue(rec.got.Load(), "X-Token"); got != big {
		t.Errorf("the plugin got a header of %d bytes, want %d", len(got), len(big))
	}
}
