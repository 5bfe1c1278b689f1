// Package echo is agent-echo, the reference agent runtime of agent-server:
// a small, complete runtime to copy (docs/runtime.md describes the protocol
// it speaks).
//
// It serves the conversations named with -conversation, or, without any,
// every conversation it finds (GET /api/conversations/search, every -poll).
// For each it holds one socket on /sockets/runtime/{id}, authenticated with
// the runtime key in AGENT_RUNTIME_KEY (X-Session-API-Key). On a "run"
// command it reports execution_status running, answers each user message
// not yet answered with an agent MessageEvent "echo: <text>" (after
// -delay), and reports finished. A pause stops it between two answers, an
// interrupt at once; both leave the conversation paused. ask_agent is
// answered with the question echoed, after -delay too. When its socket drops it reconnects
// with after_id, the last event it saw, and misses nothing.
//
// Messages are answered in order, so the k-th agent MessageEvent of the
// log answers the k-th user MessageEvent: that is how agent-echo, or a new
// agent-echo after one was killed, knows which messages still wait.
package echo

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KeyEnv is the environment variable that holds the runtime key. A key is
// never a flag: flags show in the process list.
const KeyEnv = "AGENT_RUNTIME_KEY"

// Config is what agent-echo runs with.
type Config struct {
	Server        *url.URL      // http(s)://host:port of agent-server
	Key           string        // a key from the server's auth.runtime_keys
	Conversations []string      // the conversations to serve; none: discover them
	Poll          time.Duration // how often to look for new conversations
	Delay         time.Duration // how long each answer takes
	Log           *slog.Logger
}

// Main parses args, runs until SIGINT or SIGTERM and returns the exit code.
func Main(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent-echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "http://127.0.0.1:8000", "agent-server's base URL")
	convs := fs.String("conversation", "", "comma-separated conversation IDs to serve; empty: every conversation the key may see")
	poll := fs.Duration("poll", 2*time.Second, "how often to look for new conversations when -conversation is empty")
	delay := fs.Duration("delay", 0, "how long each answer takes (shows pause and interrupt at work)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s=<runtime key> agent-echo [flags]\n\n", KeyEnv)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "agent-echo: -log-level: %v\n", err)
		return 2
	}
	cfg := Config{Key: getenv(KeyEnv), Poll: *poll, Delay: *delay,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))}
	var err error
	if cfg.Server, err = url.Parse(*server); err != nil || (cfg.Server.Scheme != "http" && cfg.Server.Scheme != "https") || cfg.Server.Host == "" {
		fmt.Fprintf(stderr, "agent-echo: -server must be http(s)://host:port, got %q\n", *server)
		return 2
	}
	for _, id := range strings.Split(*convs, ",") {
		if id = strings.TrimSpace(id); id != "" {
			cfg.Conversations = append(cfg.Conversations, id)
		}
	}
	if cfg.Key == "" {
		fmt.Fprintf(stderr, "agent-echo: set %s to a key listed in the server's auth.runtime_keys\n", KeyEnv)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
		cfg.Log.Error("agent-echo stopped", "err", err)
		return 1
	}
	return 0
}

// Run serves cfg's conversations until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	r := &runner{cfg: cfg, served: map[string]bool{}}
	cfg.Log.Info("agent-echo started", "server", cfg.Server.String(), "conversations", len(cfg.Conversations), "delay", cfg.Delay)
	if len(cfg.Conversations) > 0 {
		for _, id := range cfg.Conversations {
			r.serve(ctx, id)
		}
		<-ctx.Done()
	} else {
		r.discover(ctx)
	}
	r.wg.Wait()
	return ctx.Err()
}

// runner serves conversations, one session each.
type runner struct {
	cfg    Config
	wg     sync.WaitGroup
	mu     sync.Mutex
	served map[string]bool
}

// serve starts a session for id unless one runs.
func (r *runner) serve(ctx context.Context, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.served[id] {
		return
	}
	r.served[id] = true
	r.wg.Go(func() {
		newSession(r.cfg, id).serve(ctx)
		r.mu.Lock()
		delete(r.served, id) // gone or refused: found again if it comes back
		r.mu.Unlock()
	})
}

// discover serves every conversation the key may list, looking again
// every cfg.Poll.
func (r *runner) discover(ctx context.Context) {
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	for {
		ids, err := r.list(ctx)
		if err != nil && ctx.Err() == nil {
			r.cfg.Log.Warn("list conversations", "err", err)
		}
		for _, id := range ids {
			r.serve(ctx, id)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// list pages through GET /api/conversations/search.
func (r *runner) list(ctx context.Context) ([]string, error) {
	var ids []string
	page := ""
	for {
		u := *r.cfg.Server
		u.Path = "/api/conversations/search"
		q := url.Values{"limit": {"100"}}
		if page != "" {
			q.Set("page_id", page)
		}
		u.RawQuery = q.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("X-Session-API-Key", r.cfg.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return ids, fmt.Errorf("search conversations: %w", err)
		}
		var body struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			NextPageID *string `json:"next_page_id"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return ids, fmt.Errorf("search conversations: HTTP %d", resp.StatusCode)
		}
		if err != nil {
			return ids, fmt.Errorf("search conversations: %w", err)
		}
		for _, it := range body.Items {
			ids = append(ids, it.ID)
		}
		if body.NextPageID == nil || *body.NextPageID == "" {
			return ids, nil
		}
		page = *body.NextPageID
	}
}
