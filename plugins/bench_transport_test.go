package plugins_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/plugins"
	"github.com/agent-server/agent-server/plugins/jwt"
)

// transportSubject is one way of running the jwt plugin that
// BenchmarkTransport compares.
type transportSubject struct {
	name string
	auth core.Authenticator
	pids func() []int // the plugin processes whose CPU counts; nil for none
}

// jwtHost starts a host running only the jwt plugin, cache off, with
// processes processes, speaking at most protocol version (0: the newest).
func jwtHost(b *testing.B, processes int, version uint) *plugins.Host {
	b.Helper()
	cfg := config.Default()
	cfg.Auth.Keys = []string{validKey}
	cfg.Auth.Cache.Enabled = false
	cfg.Auth.RPCTimeout = 30 * time.Second // a stall on a shared machine is not what is measured
	cfg.Plugins.Dir = binDir
	cfg.Plugins.Processes = processes
	cfg.Plugins.MaxInFlight = 1024 // the benchmark measures the transport, not the queue
	cfg.Auth.Chains = config.Chains{Events: []string{"jwt"}, REST: []string{"jwt"}, Runtime: []string{"jwt"}}
	cfg.Plugins.Instances = map[string]config.Plugin{"jwt": {Config: map[string]any{"secret": hsSecret}}}
	h := plugins.NewHost(cfg, nil)
	if version != 0 {
		plugins.SetProtocolVersion(h, version)
	}

	if err := h.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}

// hostSubject is the jwt plugin of h as a subject.
func hostSubject(b *testing.B, name string, h *plugins.Host) transportSubject {
	b.Helper()
	a, err := h.Authenticator("jwt")
	if err != nil {
		b.Fatal(err)
	}
	return transportSubject{name: name, auth: a, pids: func() []int {
		var pids []int
		for _, hl := range h.Health() {
			for _, p := range hl.Processes {
				pids = append(pids, p.PID)
			}
		}
		return pids
	}}
}

// jwtRequests returns n handshakes, each with an HS256 JWT of its own (a
// distinct subject), as a reconnect storm sends them.
func jwtRequests(b *testing.B, n int) []*core.Request {
	b.Helper()
	exp := time.Now().Add(time.Hour).Unix()
	out := make([]*core.Request, n)
	for k := range out {
		tok, err := jwtlib.NewWithClaims(jwtlib.SigningMethodHS256, jwtlib.MapClaims{"sub": "user-" + strconv.Itoa(k), "exp": exp}).SignedString([]byte(hsSecret))
		if err != nil {
			b.Fatal(err)
		}
		r := request("", "Authorization", "Bearer "+tok)
		r.Path = "/sockets/events/6f1e2c1a-8d3b-4c55-9a43-2b7f0d8e9a11"
		r.PathParams = map[string]string{"conversation_id": "6f1e2c1a-8d3b-4c55-9a43-2b7f0d8e9a11"}
		r.RemoteAddr = "127.0.0.1:40000"
		out[k] = r
	}
	return out
}

// procCPU returns the user plus system time of pid from /proc/PID/stat,
// in clock ticks of 10 ms.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Skipf("no /proc to read the plugin's CPU time from: %v", err)
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:])) // f[0] is field 3
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// selfCPU is this process's user plus system time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// tally is what one subject cost over a run.
type tally struct {
	calls     int
	wall      time.Duration // summed over the subject's chunks
	hostCPU   time.Duration // the benchmark process during its chunks
	pluginCPU time.Duration // its plugin processes over the whole run
	lat       []time.Duration
}

// runChunk runs calls requests through s with conc concurrent callers and
// adds what it cost to t.
func runChunk(b *testing.B, s transportSubject, reqs []*core.Request, conc int, t *tally) {
	ctx := context.Background()
	var next atomic.Int64
	lat := make([]time.Duration, len(reqs))
	var failed atomic.Value
	cpu0, t0 := selfCPU(), time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= len(reqs) {
					return
				}
				start := time.Now()
				res := s.auth.Authenticate(ctx, reqs[k])
				lat[k] = time.Since(start)
				if res.Decision != core.Allow {
					failed.Store(fmt.Sprintf("%s: got %s (%v)", s.name, res.Decision, res.Err))
				}
			}
		})
	}
	wg.Wait()
	t.wall += time.Since(t0)
	t.hostCPU += selfCPU() - cpu0
	t.calls += len(reqs)
	t.lat = append(t.lat, lat...)
	if msg := failed.Load(); msg != nil {
		b.Fatal(msg)
	}
}

// compareTransports runs b.N requests through every subject, with conc
// concurrent callers, in chunks of chunk requests taken in turn, so that
// every subject sees the same machine noise. For each it reports the wall
// time and the CPU time (this process plus its plugin processes) per call,
// and each subject's ratios to the first.
func compareTransports(b *testing.B, subjects []transportSubject, conc, chunk int) {
	reqs := jwtRequests(b, chunk*4)
	for _, s := range subjects { // warm every connection and pool
		runChunk(b, s, reqs[:chunk], conc, &tally{})
	}
	tallies := make([]tally, len(subjects))
	cpu0 := make([][]time.Duration, len(subjects))
	for k, s := range subjects {
		if s.pids != nil {
			for _, pid := range s.pids() {
				cpu0[k] = append(cpu0[k], procCPU(b, pid))
			}
		}
	}
	b.ResetTimer()
	for done, round := 0, 0; done < b.N; round++ {
		n := min(chunk, b.N-done)
		part := reqs[(round%4)*chunk:][:n]
		for k, s := range subjects {
			runChunk(b, s, part, conc, &tallies[k])
		}
		done += n
	}
	b.StopTimer()
	for k, s := range subjects {
		if s.pids != nil {
			for j, pid := range s.pids() {
				if j < len(cpu0[k]) {
					tallies[k].pluginCPU += procCPU(b, pid) - cpu0[k][j]
				}
			}
		}
	}
	per := func(d time.Duration, t tally) float64 { return float64(d.Nanoseconds()) / float64(t.calls) / 1e3 }
	base := tallies[0]
	for k, s := range subjects {
		t := tallies[k]
		slices.Sort(t.lat)
		cpu := per(t.hostCPU+t.pluginCPU, t)
		b.ReportMetric(per(t.wall, t), s.name+"-µs/call")
		b.ReportMetric(cpu, s.name+"-cpu-µs/call")
		b.ReportMetric(float64(t.lat[len(t.lat)/2].Nanoseconds())/1e3, s.name+"-p50-µs")
		if k > 0 {
			b.ReportMetric(float64(t.wall)/float64(base.wall), s.name+"/"+subjects[0].name+"-wall")
			b.ReportMetric(cpu/per(base.hostCPU+base.pluginCPU, base), s.name+"/"+subjects[0].name+"-cpu")
		}
	}
}

// BenchmarkTransport compares the ways the host can call a plugin on the
// uncached path of a reconnect storm: every call a handshake with an HS256
// JWT of its own, to the jwt plugin alone, cache off. Subjects:
//
//   - unary: the host held to protocol 2, one unary gRPC call per request
//     (what protocol 1 and 2 plugins get, and every plugin got before);
//   - stream: protocol 3, every call a message on one multiplexed stream
//     per process, batched with the calls queued meanwhile;
//   - channel: protocol 4, the same calls and batches over the private
//     channel instead of the gRPC stream;
//   - channel-2proc: the same with two processes (plugins.processes: 2,
//     the default): the second stands by and takes calls only when the
//     first has plugins.max_in_flight in flight;
//   - in-process: the jwt plugin linked into the host (plugins.Local), the
//     cost a server that verifies JWTs itself pays.
//
// Cases run 1, 16 and 64 concurrent callers. Reported per subject: wall
// time and CPU time per call (this process plus the plugin processes, read
// from /proc in 10 ms ticks, so run at least a few thousand calls), the
// median latency, and the ratios of wall and CPU time to unary's.
func BenchmarkTransport(b *testing.B) {
	raw, _ := json.Marshal(map[string]any{"secret": hsSecret})
	local, err := plugins.NewLocal(context.Background(), "jwt", jwt.New(), plugins.ConfigureRequest{Config: raw})
	if err != nil {
		b.Fatal(err)
	}
	subjects := []transportSubject{
		hostSubject(b, "unary", jwtHost(b, 1, 2)),
		hostSubject(b, "stream", jwtHost(b, 1, 3)),
		hostSubject(b, "channel", jwtHost(b, 1, 0)),
		hostSubject(b, "channel-2proc", jwtHost(b, 2, 0)),
		{name: "in-process", auth: local},
	}
	for _, conc := range []int{1, 16, 64} {
		b.Run("callers-"+strconv.Itoa(conc), func(b *testing.B) {
			compareTransports(b, subjects, conc, 256)
		})
	}
}
