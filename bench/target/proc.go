package target

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/agent-server/agent-server/bench/load"
)

// userHZ is the unit of the CPU times in /proc/PID/stat; Linux fixes it at
// 100 for user space.
const userHZ = 100

// External describes a server that is already running at addr; pid (0 when
// unknown) lets its memory and CPU be read.
func External(kind Kind, addr, key string, pid int) *Process {
	p := &Process{Kind: kind, Addr: addr, PID: pid, key: key, exited: make(chan struct{})}
	return p
}

// Memory reads VmRSS, RssAnon and RssFile from /proc/PID/status.
func (p *Process) Memory() (load.Memory, error) {
	if p.PID == 0 {
		return load.Memory{}, errors.New("no pid to read the memory of")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return load.Memory{}, err
	}
	return parseStatus(b)
}

func parseStatus(status []byte) (load.Memory, error) {
	var m load.Memory
	var seen int
	for line := range bytes.Lines(status) {
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &m.RSS
		case bytes.HasPrefix(line, []byte("RssAnon:")):
			dst = &m.Anon
		case bytes.HasPrefix(line, []byte("RssFile:")):
			dst = &m.File
		default:
			continue
		}
		_, rest, _ := bytes.Cut(line, []byte(":"))
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("/proc status line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc status line %q: %w", line, err)
		}
		*dst = kb << 10
		seen++
	}
	if seen != 3 {
		return m, errors.New("no VmRSS, RssAnon and RssFile in /proc status")
	}
	return m, nil
}

// CPU returns the user plus system time used so far by the server and by
// its direct children (the agent-server's plugins).
func (p *Process) CPU() (time.Duration, error) {
	if p.PID == 0 {
		return 0, errors.New("no pid to read the CPU time of")
	}
	total, _, err := statCPU(p.PID)
	if err != nil {
		return 0, err
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if err != nil || pid == p.PID {
			continue
		}
		if cpu, ppid, err := statCPU(pid); err == nil && ppid == p.PID {
			total += cpu
		}
	}
	return total, nil
}

// statCPU reads utime+stime and the parent pid from /proc/PID/stat.
func statCPU(pid int) (time.Duration, int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStat(b)
}

// parseStat reads fields 4 (ppid), 14 (utime) and 15 (stime) of a stat
// line; the command name in parentheses may itself hold spaces.
func parseStat(b []byte) (time.Duration, int, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc stat")
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0, 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / userHZ, ppid, nil
}

// Metric reads one series from agent-server's /metrics on its admin
// listener, named as exposed (name{label="value",...}): its value, or 0
// when the series is not exposed (a labelled counter appears once first
// counted). The baseline has no metrics.
func (p *Process) Metric(series string) (float64, error) {
	admin := p.AdminAddr()
	if admin == "" {
		return 0, fmt.Errorf("%s serves no metrics", p.Kind)
	}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, err
	}
	return seriesValue(body, series)
}

// seriesValue finds series in a text exposition: 0 when it is absent.
func seriesValue(exposition []byte, series string) (float64, error) {
	prefix := []byte(series + " ")
	for line := range bytes.Lines(exposition) {
		rest, ok := bytes.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			break
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: %w", series, err)
		}
		return v, nil
	}
	return 0, nil
}

// NewConversation returns a conversation to connect to: created over REST
// on agent-server, a fresh UUID on the baseline, which needs none.
func (p *Process) NewConversation(ctx context.Context) (string, error) {
	if !p.Kind.isAgentServer() {
		return uuid.NewString(), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.Addr+"/api/conversations",
		strings.NewReader(`{"agent":{"kind":"bench"}}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Session-API-Key", p.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /api/conversations: %d %s", resp.StatusCode, body)
	}
	var c struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &c); err != nil || c.ID == "" {
		return "", fmt.Errorf("POST /api/conversations: no id in %s", body)
	}
	return c.ID, nil
}
