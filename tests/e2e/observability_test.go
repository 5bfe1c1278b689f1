package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/tests/testbin"
)

// repoFile is a path in the repository, from this package's directory.
func repoFile(parts ...string) string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(self), "..", ".."}, parts...)...)
}

// scrape returns the admin listener's /metrics in the text format.
func scrape(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

// metricNames are the agent_server_* names a PromQL file mentions.
var metricNames = regexp.MustCompile(`agent_server_[a-z0-9_]+`)

// promtool checks the server's own /metrics output and the alert rules;
// every metric the dashboard and the rules name is exported.
func TestPromtoolChecksMetricsAndRules(t *testing.T) {
	promtool := testbin.Program(t, "prometheus", "promtool")
	s := startServer(t, keyCfg()+"  failures_per_minute: 2\nstorage:\n  driver: memory\n")
	id := s.createConversation(t, key)
	c, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, c)
	c.Close()
	// Denied handshakes, then a 429: every refusal family has a sample.
	for range 3 {
		s.dial(t, "/sockets/events/"+id, hdr("X-Session-API-Key", "wrong"))
	}
	metrics := scrape(t, s.adminAddr(t))

	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(metrics)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	rules := repoFile("docs", "prometheus", "alerts.yaml")
	if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}

	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(metrics, -1) {
		exported[m[1]] = true
	}
	for _, doc := range []string{rules, repoFile("docs", "grafana", "agent-server.json")} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		names := metricNames.FindAllString(string(b), -1)
		if len(names) == 0 {
			t.Fatalf("%s names no metric", doc)
		}
		for _, n := range names {
			family := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base := strings.TrimSuffix(n, suffix); base != n && exported[base] {
					family = base
				}
			}
			if !exported[family] {
				t.Errorf("%s names %s, which the server does not export", filepath.Base(doc), n)
			}
		}
	}
}

// prometheus is a real Prometheus (Debian's package) on loopback.
type prometheus struct {
	url  string
	cmd  *exec.Cmd
	logs bytes.Buffer
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startPrometheus runs Prometheus scraping target's /metrics every second
// and waits until it is ready. It stops with the test.
func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	bin := testbin.Program(t, "prometheus", "prometheus")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	body := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: agent-server\n    static_configs:\n      - targets: ['%s']\n", target)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := &prometheus{url: "http://" + addr}
	p.cmd = exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready in 30s:\n%s", p.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// query runs an instant query at at and returns the value of its one
// series; ok is false when the result is empty.
func (p *prometheus) query(t *testing.T, expr string, at time.Time) (float64, bool) {
	t.Helper()
	q := url.Values{"query": {expr}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	resp, err := http.Get(p.url + "/api/v1/query?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s", expr, err, r.Error)
	}
	switch len(r.Data.Result) {
	case 0:
		return 0, false
	case 1:
	default:
		t.Fatalf("query %s: %d series, want one", expr, len(r.Data.Result))
	}
	v, err := strconv.ParseFloat(fmt.Sprint(r.Data.Result[0].Value[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

// scrapedAfter waits until Prometheus holds a scrape that started after
// mark, and returns an instant at which the query sees it.
func (p *prometheus) scrapedAfter(t *testing.T, mark time.Time) time.Time {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := time.Now()
		if ts, ok := p.query(t, "timestamp(agent_server_build_info)", now); ok && ts > float64(mark.UnixMilli())/1000 {
			return now
		}
		if now.After(deadline) {
			t.Fatalf("no scrape after %s within 30s:\n%s", mark.Format(time.RFC3339Nano), p.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// replaceFile copies a plugin binary over to, executable, by a rename: a
// running binary cannot be written in place.
func replaceFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil {
		t.Fatal(err)
	}
}

// pluginPID finds the pid a plugin's latest start logged.
func pluginPID(t *testing.T, s *server, plugin string) int {
	t.Helper()
	re := regexp.MustCompile(`plugin=` + plugin + ` .*pid=(\d+)`)
	var pid int
	for _, line := range strings.Split(s.Log(), "\n") {
		if (strings.Contains(line, `"auth plugin ready"`) || strings.Contains(line, `"plugin restarted"`)) && re.MatchString(line) {
			pid, _ = strconv.Atoi(re.FindStringSubmatch(line)[1])
		}
	}
	if pid == 0 {
		t.Fatalf("no pid logged for plugin %s:\n%s", plugin, s.Log())
	}
	return pid
}

// A real Prometheus scrapes a running server while the test drives allows,
// denies, a slow consumer and a plugin crash: the raw counters at two
// instants differ by exactly what was driven, and the restart counter
// moved. Then a pinned plugin's binary is replaced and its process killed:
// it cannot come back, and its up gauge reads 0 for as long as that lasts.
func TestPrometheusScrapesTheServer(t *testing.T) {
	testbin.Program(t, "prometheus", "prometheus")
	dir := t.TempDir()
	plugins := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"header", "bearer"} {
		replaceFile(t, filepath.Join(binDir, "plugins", "auth-"+p), filepath.Join(plugins, "auth-"+p))
	}
	bearer, err := os.ReadFile(filepath.Join(plugins, "auth-bearer"))
	if err != nil {
		t.Fatal(err)
	}
	pin := sha256.Sum256(bearer)
	cfg := fmt.Sprintf(`auth:
  keys: ['%s']
  failures_per_minute: 0
  chains: {events: [header, bearer], rest: [header], runtime: [header]}
plugins:
  dir: %s
  restart: {max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms}
  instances:
    # One process, no standby: killing it is the outage this test watches.
    bearer: {sha256: %s, processes: 1}
limits:
  send_queue_bytes: 65536
  max_frame_bytes: 32768
  messages_per_second: 0
  write_timeout: 60s
storage:
  driver: memory
`, key, plugins, hex.EncodeToString(pin[:]))
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := launch(t, path, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "AGENT_SERVER_AUTH__RPC_TIMEOUT=10s"})
	admin := s.adminAddr(t)
	prom := startPrometheus(t, admin)
	id := s.createConversation(t, key)

	connect := func(h http.Header) int {
		c, resp, err := s.dial(t, "/sockets/events/"+id, h)
		if err != nil {
			if resp == nil {
				t.Fatal(err)
			}
			return resp.StatusCode
		}
		mustReady(t, c)
		c.Close()
		return http.StatusSwitchingProtocols
	}
	// One of each before the first instant, so that every series exists.
	if connect(authH()) != 101 || connect(hdr("X-Session-API-Key", "wrong")) != 401 {
		t.Fatal("the first allow and deny were not answered 101 and 401")
	}

	series := map[string]string{
		"allow":   `agent_server_auth_decisions_total{route="events",plugin="header",decision="allow",reason="none"}`,
		"deny":    `agent_server_auth_decisions_total{route="events",plugin="header",decision="deny",reason="invalid"}`,
		"refused": `agent_server_socket_upgrades_refused_total{route="events",reason="unauthenticated"}`,
		"4008":    `agent_server_socket_closes_total{route="events",code="4008"}`,
		"slow":    `agent_server_slow_consumer_closes_total{route="events"}`,
		"restart": `agent_server_plugin_restarts_total{plugin="header"}`,
	}
	read := func(at time.Time) map[string]float64 {
		out := map[string]float64{}
		for name, expr := range series {
			out[name], _ = prom.query(t, expr, at) // a series not yet exported reads 0
		}
		return out
	}
	t1 := prom.scrapedAfter(t, time.Now())
	before := read(t1)

	const allows, denies = 7, 4
	for range allows {
		if code := connect(authH()); code != 101 {
			t.Fatalf("allowed connect answered %d", code)
		}
	}
	for range denies {
		if code := connect(hdr("X-Session-API-Key", "wrong-"+key)); code != 401 {
			t.Fatalf("denied connect answered %d", code)
		}
	}
	// A subscriber that never reads (one more allow), closed with 4008.
	slow, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	filler := strings.Repeat("x", 16<<10)
	for i := range 600 {
		if !postText(s, id, fmt.Sprint(i, "-", filler)) {
			t.Fatalf("post %d failed", i)
		}
	}
	if code, _ := closeCode(t, slow, 30*time.Second); code != 4008 {
		t.Fatalf("the slow subscriber closed with %d, want 4008", code)
	}
	// A plugin crash: it is restarted.
	if err := syscall.Kill(pluginPID(t, s, "header"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, `msg="plugin restarted" component=plugins plugin=header`, 30*time.Second)
	s.waitReady(t, 30*time.Second)

	t2 := prom.scrapedAfter(t, time.Now())
	after := read(t2)
	want := map[string]float64{"allow": allows + 1, "deny": denies, "refused": denies, "4008": 1, "slow": 1, "restart": 1}
	for name, w := range want {
		if got := after[name] - before[name]; got != w {
			t.Errorf("%s: %v at %s, %v at %s: moved by %v, want exactly %v", series[name], before[name], t1.Format(time.TimeOnly), after[name], t2.Format(time.TimeOnly), got, w)
		}
	}

	// A lasting outage: bearer's binary no longer matches its pin, so it
	// cannot come back until fixed.
	if v, ok := prom.query(t, `agent_server_plugin_up{plugin="bearer"}`, t2); !ok || v != 1 {
		t.Fatalf("bearer up = %v (%v) before the outage, want 1", v, ok)
	}
	replaceFile(t, filepath.Join(plugins, "auth-header"), filepath.Join(plugins, "auth-bearer"))
	if err := syscall.Kill(pluginPID(t, s, "bearer"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, "sha256", 30*time.Second)
	outage := time.Now()
	for i := range 3 { // three scrapes, seconds apart: it stays down
		at := prom.scrapedAfter(t, time.Now())
		if v, ok := prom.query(t, `agent_server_plugin_up{plugin="bearer"}`, at); !ok || v != 0 {
			t.Fatalf("scrape %d, %s into the outage: bearer up = %v (%v), want 0", i, at.Sub(outage).Round(time.Millisecond), v, ok)
		}
		if v, _ := prom.query(t, `agent_server_plugin_up{plugin="header"}`, at); v != 1 {
			t.Errorf("header up = %v during bearer's outage, want 1", v)
		}
		time.Sleep(time.Second)
	}
	resp, err := http.Get("http://" + admin + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "plugin bearer is") {
		t.Errorf("admin /ready during the outage = %d %s, want 503 naming bearer", resp.StatusCode, body)
	}
}

// No metric label value and no audit field holds the key (or its hash), a
// wrong key, or a conversation ID, except the audit record's conversation
// field for requests that name that conversation. The audit file is
// audit.sink's file:PATH, relative to the config file's directory.
func TestNoSecretInLabelsOrAuditRecords(t *testing.T) {
	const wrong = "wrong-Secret-9"
	dir := t.TempDir()
	cfg := keyCfg() + "storage:\n  driver: memory\naudit:\n  sink: file:logs/audit.log\n"
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(withPluginDir(cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Started from another directory: the relative path is the file's.
	s := launchIn(t, t.TempDir(), path, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "AGENT_SERVER_AUTH__RPC_TIMEOUT=10s"})
	id := s.createConversation(t, key)
	subproto := tokenEntry(key)
	for _, h := range []struct {
		path   string
		header http.Header
	}{
		{"/sockets/events/" + id + "?session_api_key=" + url.QueryEscape(key), nil},
		{"/sockets/events/" + id, hdr("Sec-WebSocket-Protocol", core.Subprotocol+", "+subproto)},
		{"/sockets/events/" + id, hdr("Authorization", "Bearer "+key)},
		{"/sockets/events/" + id + "?session_api_key=" + wrong, nil},
		{"/sockets/events/" + id, hdr("X-Session-API-Key", wrong)},
	} {
		if c, _, err := s.dial(t, h.path, h.header); err == nil {
			mustReady(t, c)
			c.Close()
		}
	}
	s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", key)
	s.request(t, "GET", "/api/conversations/"+id, nil, "X-Session-API-Key", key)
	s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", wrong)

	fp := core.KeyFingerprint(key)
	secrets := []string{key, wrong, url.QueryEscape(key), hexSHA(key), hexSHA(wrong), strings.TrimPrefix(fp, "key:"), strings.TrimPrefix(tokenEntry(key), "base64url.bearer.agent-server.")}
	metrics := scrape(t, s.adminAddr(t))
	for _, m := range regexp.MustCompile(`([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(metrics, -1) {
		for _, bad := range append(secrets, id) {
			if strings.Contains(m[2], bad) {
				t.Errorf("metric label %s=%q holds %q", m[1], m[2], bad)
			}
		}
	}

	var raw []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		raw, _ = os.ReadFile(filepath.Join(dir, "logs", "audit.log"))
		if bytes.Count(raw, []byte("\n")) >= 9 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var withConv, without int
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		for field, v := range rec {
			str := fmt.Sprint(v)
			for _, bad := range secrets {
				if strings.Contains(str, bad) {
					t.Errorf("audit field %s = %q holds %q", field, str, bad)
				}
			}
			if field != "conversation" && strings.Contains(str, id) {
				t.Errorf("audit field %s = %q holds the conversation ID", field, str)
			}
		}
		if rec["request_id"] == "" || rec["remote_addr"] == "" {
			t.Errorf("audit record without request_id or remote_addr: %s", line)
		}
		switch rec["conversation"] {
		case id:
			withConv++
		case nil:
			without++
		default:
			t.Errorf("audit record names conversation %v: %s", rec["conversation"], line)
		}
	}
	// 5 handshakes and GET /api/conversations/{id} name it; the create and
	// both counts do not.
	if withConv != 6 || without != 3 {
		t.Errorf("audit records: %d with the conversation, %d without, want 6 and 3:\n%s", withConv, without, raw)
	}
}

func hexSHA(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// The admin listener's address in use stops start-up with an error naming
// admin.addr; an empty one turns the listener off.
func TestAdminListenerBind(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(withPluginDir(keyCfg()+"storage:\n  driver: memory\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "agent-server"), "serve", "--config", path, "--addr", "127.0.0.1:0", "--admin-addr", busy.Addr().String())
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the server kept running with its admin address in use:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "admin.addr: listen on "+busy.Addr().String()) {
		t.Errorf("exit %v, output:\n%s\nwant a failure naming admin.addr", err, out)
	}

	// --admin-addr "" turns it off: the server listens, the admin does not.
	off := &server{t: t, exited: make(chan struct{}), config: path}
	off.cmd = exec.Command(filepath.Join(binDir, "agent-server"), "serve", "--config", path, "--addr", "127.0.0.1:0", "--admin-addr", "")
	off.cmd.Env = cmd.Env
	stderr, err := off.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := off.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(off.kill)
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			off.logMu.Lock()
			off.log.WriteString(sc.Text() + "\n")
			off.logMu.Unlock()
			if listening.MatchString(sc.Text()) {
				close(up)
			}
		}
		off.err = off.cmd.Wait()
		close(off.exited)
	}()
	select {
	case <-up: // the admin listener, when on, is logged right after, before any shutdown
	case <-off.exited:
	case <-time.After(30 * time.Second):
	}
	_ = off.cmd.Process.Signal(syscall.SIGTERM)
	<-off.exited
	if log := off.Log(); !listening.MatchString(log) || strings.Contains(log, "admin listening") {
		t.Errorf("with admin.addr empty the server must listen and the admin must not:\n%s", log)
	}
}

// The audit file sink through a rotation and a graceful stop: the records
// of the requests answered before the SIGHUP are in the renamed file, the
// later ones in the new file, each a whole JSON line, none missing once the
// server has stopped; the server's log, written through the same kind of
// line writer, is whole lines ending with its last one, "stopped".
func TestAuditFileRotationAndStop(t *testing.T) {
	const before, after, clients = 96, 24, 8
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	s := startServer(t, keyCfg()+"storage:\n  driver: memory\naudit:\n  sink: file:"+path+"\n")
	requests := func(n int) {
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for range n / clients {
					if code, _ := s.request(t, "GET", "/api/conversations/count", nil, "X-Session-API-Key", key); code != 200 {
						t.Errorf("GET /api/conversations/count = %d, want 200", code)
					}
				}
			})
		}
		wg.Wait()
	}
	requests(before)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, "SIGHUP: audit log reopened", 10*time.Second)
	requests(after)
	if err := s.stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, s.Log())
	}

	for _, f := range []struct {
		path string
		want int
	}{{path + ".1", before}, {path, after}} {
		raw, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
		for _, line := range lines {
			var rec core.AuditRecord
			if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Event != core.AuditRequest || rec.Decision != core.DecisionAllow {
				t.Fatalf("%s: line %q is not a whole allow record: %v", f.path, line, err)
			}
		}
		if len(lines) != f.want {
			t.Errorf("%s holds %d records, want %d", f.path, len(lines), f.want)
		}
	}
	log := strings.Split(strings.TrimSuffix(s.Log(), "\n"), "\n")
	for _, line := range log {
		if !strings.HasPrefix(line, "time=") {
			t.Errorf("log line %q is not a whole log line", line)
		}
	}
	if last := log[len(log)-1]; !strings.Contains(last, "msg=stopped") {
		t.Errorf("the log's last line is %q, want the server's \"stopped\"", last)
	}
}
