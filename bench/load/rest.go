package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// The cluster scenarios' REST side: posts with idempotency keys through
// the live nodes in turn (recovery's writers, the cluster storm's posters),
// and the read of a conversation's log.

// newRESTClient is an HTTP client that keeps conns connections per node
// and bounds each call by postAttempt.
func newRESTClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(conns, 2)
	return &http.Client{Transport: tr, Timeout: postAttempt}
}

// restNodes makes REST calls with the session key through the nodes that
// are up, in turn. It is safe for concurrent use.
type restNodes struct {
	n    Nodes
	key  string
	http *http.Client

	mu   sync.Mutex
	live []bool
	next int // round-robin over live nodes
}

// newRESTNodes returns a restNodes with every node up, keeping conns
// connections to each.
func newRESTNodes(n Nodes, key string, conns int) *restNodes {
	r := &restNodes{n: n, key: key, http: newRESTClient(conns), live: make([]bool, len(n.Servers))}
	for i := range r.live {
		r.live[i] = true
	}
	return r
}

func (r *restNodes) setLive(node int, up bool) {
	r.mu.Lock()
	r.live[node] = up
	r.mu.Unlock()
}

// pick returns a live node other than avoid (-1 for any), round-robin.
func (r *restNodes) pick(avoid int) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for range r.live {
		i := r.next % len(r.live)
		r.next++
		if r.live[i] && i != avoid {
			return i, nil
		}
	}
	for i, up := range r.live {
		if up {
			return i, nil
		}
	}
	return -1, errNoSurvivor
}

// post posts body to conversation conv with the idempotency key idem,
// through live nodes in turn (another one after each failed attempt),
// until one acknowledges it or timeout passes. It returns when the
// acknowledgement arrived and how many attempts failed before it. A post
// whose owner has just died is not acknowledged, though it may be in the
// log: the next attempt, with the same key, finds it there or appends it.
func (r *restNodes) post(ctx context.Context, conv string, body []byte, idem string, timeout time.Duration) (time.Time, int, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		node, err := r.pick(-1)
		if err != nil {
			return time.Time{}, attempt, err
		}
		code, answer, err := r.call(ctx, node, http.MethodPost, "/api/conversations/"+conv+"/events", body, idem)
		if code == http.StatusOK {
			return time.Now(), attempt, nil
		}
		if err == nil {
			err = fmt.Errorf("HTTP %d %s", code, firstBytes(answer, 200))
		}
		last = fmt.Errorf("through node %d: %w", node, err)
		if !sleep(ctx, retryWait) {
			return time.Time{}, attempt, ctx.Err()
		}
	}
	return time.Time{}, 0, fmt.Errorf("post %s not acknowledged within %s; last: %w", idem, timeout, last)
}

// call makes one REST call on node with the key (and an idempotency key
// when idem is not empty) and returns the status and body; 0 on a
// transport error.
func (r *restNodes) call(ctx context.Context, node int, method, path string, body []byte, idem string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+r.n.Servers[node].Addr+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-Session-API-Key", r.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

// write posts to random conversations at Rate/Writers per second until
// stop, each post retried until acknowledged. Missed slots are skipped,
// not made up for.
func (rt *trial) write(ctx context.Context, w int, stop <-chan struct{}) {
	every := time.Duration(float64(rt.p.Writers) * float64(time.Second) / rt.p.Rate)
	next := time.Now()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		k := mathrand.IntN(len(rt.convs))
		text := fmt.Sprintf("rec-%s-w%d-%d", rt.nonce, w, i)
		if _, err := rt.post(ctx, k, text); err != nil {
			rt.errs.add(fmt.Errorf("writer %d: %w", w, err))
			return
		}
		next = next.Add(every)
		if now := time.Now(); next.Before(now) {
			next = now
		}
		if !sleepUnless(ctx, stop, time.Until(next)) {
			return
		}
	}
}

// post posts text to conversation k with text as its idempotency key
// (restNodes.post) and records it as acknowledged. It returns when the
// acknowledgement arrived.
func (rt *trial) post(ctx context.Context, k int, text string) (time.Time, error) {
	body := []byte(`{"role":"user","content":"` + text + `"}`)
	start := time.Now()
	at, failed, err := rt.rest.post(ctx, rt.convs[k], body, text, rt.p.Timeout)
	if err != nil {
		return time.Time{}, err
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.texts == nil {
		rt.texts = map[string]int{}
	}
	if _, ok := rt.texts[text]; !ok {
		rt.texts[text] = k
		rt.acked.Add(1)
	}
	rt.slowest = max(rt.slowest, at.Sub(start))
	if failed > 0 {
		rt.retried++
	}
	return at, nil
}

func firstBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return strings.TrimSpace(string(b))
}

// logEvent is the part of an event the check reads, in a frame or in
// events/search.
type logEvent struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	Key  string `json:"key"`
	LLM  *struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	} `json:"llm_message"`
}

func (e *logEvent) text() string {
	if e.LLM == nil || len(e.LLM.Content) == 0 {
		return ""
	}
	return e.LLM.Content[0].Text
}

// logOf pages through conversation k's log with events/search on a live
// node.
func (rt *trial) logOf(ctx context.Context, k int) ([]logEvent, error) {
	node, err := rt.rest.pick(-1)
	if err != nil {
		return nil, err
	}
	var out []logEvent
	page := ""
	for {
		q := url.Values{"limit": {fmt.Sprint(logPage)}}
		if page != "" {
			q.Set("page_id", page)
		}
		code, body, err := rt.rest.call(ctx, node, http.MethodGet, "/api/conversations/"+rt.convs[k]+"/events/search?"+q.Encode(), nil, "")
		if err != nil || code != http.StatusOK {
			return nil, fmt.Errorf("events/search on node %d: %d %s %v", node, code, firstBytes(body, 200), err)
		}
		var pg struct {
			Items      []logEvent `json:"items"`
			NextPageID *string    `json:"next_page_id"`
		}
		if err := json.Unmarshal(body, &pg); err != nil {
			return nil, fmt.Errorf("events/search on node %d: %w", node, err)
		}
		out = append(out, pg.Items...)
		if pg.NextPageID == nil || *pg.NextPageID == "" {
			return out, nil
		}
		page = *pg.NextPageID
	}
}
