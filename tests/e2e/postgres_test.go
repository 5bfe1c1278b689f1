package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

// pgPassword is in every DSN these tests give the server (trust
// authentication ignores it), so that they can check it never shows.
const pgPassword = "pg-secret-hunter2"

// withPassword puts pgPassword in a pgtest DSN.
func withPassword(dsn string) string {
	return strings.Replace(dsn, "postgres://postgres@", "postgres://postgres:"+pgPassword+"@", 1)
}

// readyBody returns /ready's status code and body.
func readyBody(t *testing.T, s *server) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(s.url("/ready"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// PostgreSQL unreachable at start: the server starts anyway, /ready is 503
// naming the store, and it becomes ready on its own once the database is
// up. The DSN's password shows nowhere.
func TestPostgresUnreachableAtStart(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Stop()
	s := startServerNotReady(t, keyCfg()+pgStorage(withPassword(pg.DSN("postgres"))))
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := readyBody(t, s)
		if code == http.StatusServiceUnavailable && strings.HasPrefix(fmt.Sprint(body["detail"]), "store: ") {
			if comps, _ := body["components"].(map[string]any); comps["plugins"] != "ok" || comps["store"] == "ok" {
				t.Errorf("/ready components = %v, want plugins ok and the store not", body["components"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready = %d %v, want 503 naming the store", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Calls that need the store fail cleanly meanwhile.
	code, body := s.request(t, "POST", "/api/conversations", map[string]any{}, "X-Session-API-Key", key)
	if code != http.StatusServiceUnavailable {
		t.Errorf("create while the store is down: %d %s, want 503", code, body)
	}
	time.Sleep(time.Second) // a few retries
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, 30*time.Second)
	id := s.createConversation(t, key)
	c, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, c)
	select {
	case <-s.exited:
		t.Fatalf("the server exited: %v", s.err)
	default:
	}
	if strings.Contains(s.Log(), pgPassword) {
		t.Errorf("the DSN's password is in the server's log:\n%s", s.Log())
	}
	if out, _ := runCLI(t, keyCfg()+pgStorage(withPassword(pg.DSN("postgres"))), nil, "config", "check"); strings.Contains(out, pgPassword) || !strings.Contains(out, "postgres:***@") {
		t.Errorf("config check shows the password, or no masked DSN:\n%s", out)
	}
}

// reader is one socket that records every event it receives.
type reader struct {
	c    *websocket.Conn
	mu   sync.Mutex
	got  []event
	errs []event // ServerErrorEvents
	done chan struct{}
}

func newReader(t *testing.T, s *server, id string) *reader {
	t.Helper()
	c, _, err := s.dial(t, "/sockets/events/"+id, authH())
	if err != nil {
		t.Fatal(err)
	}
	mustReady(t, c)
	r := &reader{c: c, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			var e event
			if json.Unmarshal(b, &e) != nil {
				return
			}
			r.mu.Lock()
			switch {
			case e.Kind == "ServerErrorEvent":
				r.errs = append(r.errs, e)
			case e.Kind == "ConversationStateUpdateEvent" && e.Key == "full_state":
				// not in the log: a resync after a failed write
			default:
				r.got = append(r.got, e)
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *reader) events() ([]event, []event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.got...), append([]event(nil), r.errs...)
}

// PostgreSQL restarted under a steady stream of posts: posts made while it
// is down fail with 503 and Retry-After (a socket's with a ServerErrorEvent
// store_unavailable), the sockets stay open, and once it is back posts
// succeed again without restarting the server. Every acknowledged post is
// stored once, Seq has no gap, and every socket saw the log in order.
func TestPostgresRestartUnderLoad(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.Database(t)
	s := startServer(t, keyCfg()+pgStorage(dsn)+"limits:\n  messages_per_second: 0\n")
	id := s.createConversation(t, key)
	readers := []*reader{newReader(t, s, id), newReader(t, s, id)}

	var acked sync.Map // text -> true
	var ok, refused atomic.Int64
	var retryAfterMissing atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 3 {
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
				req, _ := http.NewRequest("POST", s.url("/api/conversations/"+id+"/events"), strings.NewReader(fmt.Sprintf(`{"role":"user","content":%q}`, text)))
				req.Header.Set("X-Session-API-Key", key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("post: %v", err)
					return
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					acked.Store(text, true)
					ok.Add(1)
				case http.StatusServiceUnavailable:
					refused.Add(1)
					if resp.Header.Get("Retry-After") == "" {
						retryAfterMissing.Add(1)
					}
					time.Sleep(20 * time.Millisecond)
				default:
					t.Errorf("post %s: status %d", text, resp.StatusCode)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("posts before the restart", func() bool { return ok.Load() >= 30 })
	pg.Stop()
	waitFor("posts refused while PostgreSQL is down", func() bool { return refused.Load() >= 5 })
	// A socket's message is refused too, and the socket stays open.
	send(t, readers[0].c, map[string]any{"role": "user", "content": "while-down"})
	waitFor("a ServerErrorEvent store_unavailable", func() bool {
		_, errs := readers[0].events()
		for _, e := range errs {
			if e.Code == "store_unavailable" {
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond)
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	before := ok.Load()
	waitFor("posts after PostgreSQL is back", func() bool { return ok.Load() >= before+30 })
	close(stop)
	wg.Wait()
	if n := retryAfterMissing.Load(); n > 0 {
		t.Errorf("%d refusals had no Retry-After", n)
	}

	// The log: every acknowledged post once; no gap in Seq (in the database).
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var count, maxSeq, lastSeq int64
	if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(max(seq), 0), (SELECT last_seq FROM conversations WHERE id = $1) FROM events WHERE conversation_id = $1`, id).Scan(&count, &maxSeq, &lastSeq); err != nil {
		t.Fatal(err)
	}
	if count != maxSeq || maxSeq != lastSeq {
		t.Errorf("events: count %d, max(seq) %d, last_seq %d: want them equal (no gap)", count, maxSeq, lastSeq)
	}
	log := history(t, s, id, "?resend_all=true")
	if int64(len(log)) != count {
		t.Errorf("the socket replayed %d events, the database holds %d", len(log), count)
	}
	texts := map[string]int{}
	for _, e := range log {
		texts[e.text()]++
	}
	acked.Range(func(k, _ any) bool {
		if texts[k.(string)] != 1 {
			t.Errorf("acknowledged post %q is in the log %d times", k, texts[k.(string)])
		}
		return true
	})
	for text, n := range texts {
		if n != 1 {
			t.Errorf("%q is in the log %d times", text, n)
		}
	}
	// Both sockets are still open and saw the whole log, in order.
	if !postText(s, id, "last") {
		t.Fatal("post last failed")
	}
	for i, r := range readers {
		waitFor(fmt.Sprintf("reader %d to get the last event", i), func() bool {
			got, _ := r.events()
			return len(got) > 0 && got[len(got)-1].text() == "last"
		})
		got, _ := r.events()
		if len(got) != len(log)+1 {
			t.Errorf("reader %d got %d events, the log has %d (+1)", i, len(got), len(log))
			continue
		}
		for j := range log {
			if got[j].ID != log[j].ID {
				t.Errorf("reader %d event %d = %s, the log's is %s", i, j, got[j].ID, log[j].ID)
				break
			}
		}
	}
	t.Logf("%d posts acknowledged, %d refused while PostgreSQL was down; %d events stored", ok.Load(), refused.Load(), count)
}
