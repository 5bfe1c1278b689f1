package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

// postText posts a user message over REST and reports whether the server
// answered success. A transport error (the server died) is false, not fatal.
func postText(s *server, id, text string) bool {
	body := strings.NewReader(fmt.Sprintf(`{"role":"user","content":%q}`, text))
	req, err := http.NewRequest("POST", s.url("/api/conversations/"+id+"/events"), body)
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Session-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// history connects with query and reads the replay until it reaches the
// newest event of the log (asked through REST first) or a ServerErrorEvent,
// returning what it read oldest first (full_state excluded). It never
// decides by silence, which a loaded machine can fake.
func history(t *testing.T, s *server, id, query string) []event {
	t.Helper()
	code, body := s.request(t, "GET", "/api/conversations/"+id+"/events/search?sort_order=TIMESTAMP_DESC&limit=1", nil, "X-Session-API-Key", key)
	if code != 200 {
		t.Fatalf("find the newest event: %d %s", code, body)
	}
	var page struct{ Items []event }
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("find the newest event: %v", err)
	}
	c, _, err := s.dial(t, "/sockets/events/"+id+query, authH())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	mustReady(t, c)
	if len(page.Items) == 0 || strings.Contains(query, "after_id="+url.QueryEscape(page.Items[0].ID)) {
		return nil // nothing to replay
	}
	last := page.Items[0].ID
	var out []event
	for {
		e, err := read(t, c, 30*time.Second)
		if err != nil {
			t.Fatalf("read history (%d events so far): %v", len(out), err)
		}
		out = append(out, e)
		if e.ID == last || e.Kind == "ServerErrorEvent" {
			return out
		}
	}
}

// forEachDriver runs a durability case against each durable store: bolt
// (the default) and PostgreSQL, on a throwaway server (pgtest). run gets
// the storage: section to add to its config.
func forEachDriver(t *testing.T, run func(t *testing.T, storage string)) {
	t.Run("bolt", func(t *testing.T) { run(t, "") })
	t.Run("postgres", func(t *testing.T) { run(t, pgStorage(pgtest.DSN(t))) })
}

// pgStorage is the storage: section for a PostgreSQL DSN.
func pgStorage(dsn string) string {
	return "storage:\n  driver: postgres\n  postgres:\n    dsn: '" + dsn + "'\n"
}

func ids(evs []event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// TestGracefulRestartKeepsEverything: conversations and events posted
// before a SIGTERM are all there after a restart, in order, with the same
// IDs, and new events continue the log.
func TestGracefulRestartKeepsEverything(t *testing.T) {
	forEachDriver(t, testGracefulRestart)
}

func testGracefulRestart(t *testing.T, storage string) {
	s := startServer(t, keyCfg()+storage)
	const convs, per = 3, 15
	var convIDs []string
	before := map[string][]event{}
	for i := range convs {
		id := s.createConversation(t, key)
		convIDs = append(convIDs, id)
		for j := range per {
			if !postText(s, id, fmt.Sprintf("c%d-m%d", i, j)) {
				t.Fatalf("post c%d-m%d failed", i, j)
			}
		}
		before[id] = history(t, s, id, "?resend_all=true")
		if len(before[id]) != per {
			t.Fatalf("conversation %d has %d events before the restart, want %d", i, len(before[id]), per)
		}
	}
	if err := s.stop(10 * time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, s.Log())
	}

	s = s.restart(t)
	for i, id := range convIDs {
		if code, body := s.request(t, "GET", "/api/conversations/"+id, nil, "X-Session-API-Key", key); code != http.StatusOK {
			t.Fatalf("conversation %d after restart: %d %s", i, code, body)
		}
		after := history(t, s, id, "?resend_all=true")
		if got, want := strings.Join(ids(after), ","), strings.Join(ids(before[id]), ","); got != want {
			t.Fatalf("conversation %d after restart:\n got %s\nwant %s", i, got, want)
		}
		for j, e := range after {
			if e.text() != fmt.Sprintf("c%d-m%d", i, j) || e.Timestamp != before[id][j].Timestamp {
				t.Fatalf("conversation %d event %d = %+v, want %+v", i, j, e, before[id][j])
			}
		}
	}
	if !postText(s, convIDs[0], "after") {
		t.Fatal("post after restart failed")
	}
	if evs := history(t, s, convIDs[0], "?resend_all=true"); len(evs) != per+1 || evs[per].text() != "after" {
		t.Fatalf("after a new post the log has %d events, last %+v", len(evs), evs[len(evs)-1])
	}
}

// TestKillWhilePosting SIGKILLs the server while clients post: after a
// restart, every event whose POST answered success and every event a
// socket received is in the log, each once, whole, and each poster's
// events are in the order it posted them.
func TestKillWhilePosting(t *testing.T) {
	forEachDriver(t, testKillWhilePosting)
}

func testKillWhilePosting(t *testing.T, storage string) {
	s := startServer(t, keyCfg()+storage)
	id := s.createConversation(t, key)
	sub, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, sub)

	var seenMu sync.Mutex
	var seen []event // what the socket received before the kill
	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		for {
			_ = sub.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, b, err := sub.ReadMessage()
			if err != nil {
				return
			}
			var e event
			if jerr := json.Unmarshal(b, &e); jerr != nil {
				t.Errorf("socket frame is not JSON (torn?): %q", b)
				return
			}
			seenMu.Lock()
			seen = append(seen, e)
			seenMu.Unlock()
		}
	}()

	const posters = 4
	acked := make([][]string, posters)
	var answered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range posters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				text := fmt.Sprintf("p%d-%d", p, n)
				if !postText(s, id, text) {
					return
				}
				acked[p] = append(acked[p], text)
				answered.Add(1)
			}
		}()
	}
	// Kill mid-stream, once enough posts were answered to prove something.
	deadline := time.Now().Add(30 * time.Second)
	for answered.Load() < 40 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.kill()
	close(stop)
	wg.Wait()
	<-subDone
	total := 0
	for _, a := range acked {
		total += len(a)
	}
	if total < 10 {
		t.Fatalf("only %d posts answered before the kill; the test proves nothing", total)
	}

	s = s.restart(t)
	log := history(t, s, id, "?resend_all=true")
	byText := map[string]int{} // text -> position in the log
	byID := map[string]bool{}
	for i, e := range log {
		if e.ID == "" || e.Kind != "MessageEvent" || e.text() == "" {
			t.Fatalf("event %d is incomplete: %+v", i, e)
		}
		if byID[e.ID] {
			t.Fatalf("event %s is in the log twice", e.ID)
		}
		byID[e.ID] = true
		if _, dup := byText[e.text()]; dup {
			t.Fatalf("message %q is in the log twice", e.text())
		}
		byText[e.text()] = i
	}
	for p, texts := range acked {
		prev := -1
		for _, text := range texts {
			pos, ok := byText[text]
			if !ok {
				t.Fatalf("acknowledged post %q is missing after the restart (log has %d events)", text, len(log))
			}
			if pos < prev {
				t.Fatalf("poster %d: %q is before its previous post in the log", p, text)
			}
			prev = pos
		}
	}
	for _, e := range seen {
		if !byID[e.ID] {
			t.Fatalf("event %s (%q) was broadcast but is missing after the restart", e.ID, e.text())
		}
	}
	t.Logf("%d posts acknowledged, %d broadcast, %d in the log after SIGKILL and restart", total, len(seen), len(log))
}

// TestResumeAcrossRestart: a client that saw part of the log reconnects
// after a restart with after_id and gets exactly what it missed, then live
// events; resend_mode=since starts at the right event; an unknown after_id
// gets unknown_event_id and nothing replayed.
func TestResumeAcrossRestart(t *testing.T) {
	forEachDriver(t, testResumeAcrossRestart)
}

func testResumeAcrossRestart(t *testing.T, storage string) {
	s := startServer(t, keyCfg()+storage)
	id := s.createConversation(t, key)
	for i := range 10 {
		if !postText(s, id, fmt.Sprint("m", i)) {
			t.Fatal("post failed")
		}
	}
	all := history(t, s, id, "?resend_all=true")
	lastSeen := all[5]
	for i := 10; i < 14; i++ {
		if !postText(s, id, fmt.Sprint("m", i)) {
			t.Fatal("post failed")
		}
	}
	s.kill() // a crash, not a clean stop

	s = s.restart(t)
	if !postText(s, id, "m14") {
		t.Fatal("post after restart failed")
	}
	got := history(t, s, id, "?after_id="+url.QueryEscape(lastSeen.ID))
	var texts []string
	for _, e := range got {
		texts = append(texts, e.text())
	}
	if want := "m6,m7,m8,m9,m10,m11,m12,m13,m14"; strings.Join(texts, ",") != want {
		t.Fatalf("after_id=%s replayed %v, want %s", lastSeen.ID, texts, want)
	}
	for i, e := range got[:4] {
		if e.ID != all[6+i].ID {
			t.Fatalf("replayed event %d has id %s, had %s before the restart", i, e.ID, all[6+i].ID)
		}
	}

	since := history(t, s, id, "?resend_mode=since&after_timestamp="+url.QueryEscape(all[3].Timestamp))
	if len(since) == 0 || since[0].ID != all[3].ID || len(since) != 15-3 {
		t.Fatalf("resend_mode=since from event 3: %d events starting %+v, want 12 from %s", len(since), since, all[3].ID)
	}

	unknown := history(t, s, id, "?after_id=00000000-0000-4000-8000-000000000000")
	if len(unknown) != 1 || unknown[0].Kind != "ServerErrorEvent" || unknown[0].Code != "unknown_event_id" {
		t.Fatalf("unknown after_id got %+v, want one ServerErrorEvent unknown_event_id", unknown)
	}
}

// TestPassivatedConversationComesBack: with a short idle timeout the
// conversation's actor is stopped, and a connection and a post bring it
// back transparently.
func TestPassivatedConversationComesBack(t *testing.T) {
	s := startServer(t, keyCfg()+"conversations:\n  idle_timeout: 200ms\nlog:\n  level: debug\n")
	id := s.createConversation(t, key)
	if !postText(s, id, "before") {
		t.Fatal("post failed")
	}
	s.waitLog(t, "conversation passivated", 30*time.Second)
	c, _, err := s.dial(t, "/sockets/events/"+id+"?resend_all=true", authH())
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, c)
	if e, err := read(t, c, 30*time.Second); err != nil || e.text() != "before" {
		t.Fatalf("replay after passivation: %+v %v", e, err)
	}
	if !postText(s, id, "after") {
		t.Fatal("post after passivation failed")
	}
	if e, err := read(t, c, 30*time.Second); err != nil || e.text() != "after" {
		t.Fatalf("live event after passivation: %+v %v", e, err)
	}
}

// TestSlowConsumerAmongFifty: one subscriber never reads, fifty do. The
// fifty receive every event promptly; the slow one is closed with 4008
// "slow consumer". The close frame waits behind what the kernel already
// holds for the slow socket, so the test reads it only at the end, within
// limits.write_timeout (60 s here, longer than the posting takes).
func TestSlowConsumerAmongFifty(t *testing.T) {
	// 600 events of 16 KiB: more than the slow socket's kernel buffers
	// (up to 4 MiB on each side) and its 64 KiB queue can hold.
	const readers, n = 50, 600
	s := startServer(t, keyCfg()+"limits:\n  send_queue_bytes: 65536\n  max_frame_bytes: 32768\n  subscribers_per_conversation: 60\n  write_timeout: 60s\n")
	id := s.createConversation(t, key)

	// The slow socket keeps the default receive buffer: a tiny one (below
	// loopback's 64 KiB MSS) makes Linux hold back window updates, and the
	// close frame would then crawl out on zero-window probes.
	slow, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()

	type got struct {
		at  []time.Time
		err error
	}
	results := make([]got, readers)
	var wg sync.WaitGroup
	ready := make(chan struct{}, readers)
	for r := range readers {
		c, _, err := s.dial(t, "/sockets/events/"+id, authH())
		if err != nil {
			t.Fatal(err)
		}
		mustReady(t, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready <- struct{}{}
			for i := range n {
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, b, err := c.ReadMessage()
				if err != nil {
					results[r].err = fmt.Errorf("event %d: %w", i, err)
					return
				}
				// Matching the text's prefix, not decoding 10 MB of JSON
				// per reader, keeps the test's own CPU out of the way.
				if want := fmt.Sprintf(`"text":"%d-`, i); !bytes.Contains(b, []byte(want)) {
					results[r].err = fmt.Errorf("event %d is %.80q: lost or out of order", i, b)
					return
				}
				results[r].at = append(results[r].at, time.Now())
			}
		}()
	}
	for range readers {
		<-ready
	}
	filler := strings.Repeat("x", 16<<10)
	posted := make([]time.Time, n)
	for i := range n {
		if !postText(s, id, fmt.Sprint(i, "-", filler)) {
			t.Fatalf("post %d failed", i)
		}
		posted[i] = time.Now()
	}
	wg.Wait()
	var worst time.Duration
	for r, res := range results {
		if res.err != nil {
			t.Fatalf("reader %d: %v", r, res.err)
		}
		for i, at := range res.at {
			worst = max(worst, at.Sub(posted[i]))
		}
	}
	// Generous for a shared 2-core machine: a stalled subscriber would hold
	// the others for write_timeout (10 s) or forever.
	if worst > 30*time.Second {
		t.Errorf("worst delivery delay to a reading client %s, want well under the write timeout", worst)
	}
	t.Logf("worst delay from POST answer to delivery, over %d readers x %d events: %s", readers, n, worst)
	code, text := closeCode(t, slow, 20*time.Second)
	if code != 4008 || text != "slow consumer" {
		t.Fatalf("slow subscriber closed with %d %q, want 4008 \"slow consumer\"", code, text)
	}
}
