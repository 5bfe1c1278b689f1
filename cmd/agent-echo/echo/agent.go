package echo

import (
	"context"
	"encoding/json"
	"time"
)

// runState is the run under way.
type runState struct {
	cancel      context.CancelFunc // ends the run at once: interrupt, or the socket dropped
	paused      bool               // pause asked: stop before the next answer
	interrupted bool
}

// command carries out a command from the server. Commands with an id want
// a reply, which becomes the REST answer.
func (s *session) command(ctx context.Context, f *frame) {
	s.mu.Lock()
	r := s.run
	s.mu.Unlock()
	switch f.Command {
	case "run":
		s.startRun(ctx)
	case "pause", "interrupt":
		if r == nil {
			return
		}
		s.mu.Lock()
		r.paused = true
		r.interrupted = f.Command == "interrupt"
		s.mu.Unlock()
		if f.Command == "interrupt" {
			r.cancel()
		}
	case "ask_agent":
		var p struct {
			Question string `json:"question"`
		}
		_ = json.Unmarshal(f.Params, &p)
		go func() { // an answer takes -delay, as a run's do
			time.Sleep(s.cfg.Delay)
			s.reply(f.ID, 200, map[string]string{"response": "echo: " + p.Question})
		}()
	case "condense":
		// agent-echo keeps no LLM context, so there is nothing to condense.
		s.reply(f.ID, 200, map[string]bool{"success": true})
	case "respond_to_confirmation":
		// agent-echo never waits for a confirmation, so nothing is pending.
	default:
		if f.ID != "" {
			s.reply(f.ID, 400, map[string]string{"detail": "agent-echo does not support " + f.Command})
		}
	}
}

// startRun starts a run unless one is under way (which then answers the
// new messages too).
func (s *session) startRun(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != nil {
		return
	}
	runCtx, cancel := context.WithCancel(ctx)
	r := &runState{cancel: cancel}
	s.run = r
	go s.loop(ctx, runCtx, r)
}

// loop is one run: report running, answer the waiting messages one by one,
// and report finished, or paused when asked to stop. It returns silently
// when the socket drops: the server reports that run as lost.
func (s *session) loop(ctx, runCtx context.Context, r *runState) {
	defer func() {
		s.mu.Lock()
		if s.run == r {
			s.run = nil
		}
		s.mu.Unlock()
		r.cancel()
	}()
	if err := s.report(runCtx, "running"); err != nil {
		return
	}
	for {
		s.mu.Lock()
		paused, interrupted := r.paused, r.interrupted
		next, waiting := "", s.answered < len(s.users)
		if waiting {
			next = s.users[s.answered]
		}
		s.mu.Unlock()
		switch {
		case runCtx.Err() != nil && !interrupted:
			return // the socket dropped, or agent-echo stops
		case paused:
			_ = s.report(ctx, "paused")
			return
		case !waiting:
			_ = s.report(ctx, "finished")
			return
		}
		select {
		case <-time.After(s.cfg.Delay):
		case <-runCtx.Done():
			continue
		}
		s.mu.Lock()
		paused = r.paused
		s.mu.Unlock()
		if paused {
			continue // a pause during the work: stop before answering
		}
		id, err := s.publish(runCtx, map[string]any{
			"kind":        "MessageEvent",
			"source":      "agent",
			"llm_message": map[string]any{"role": "assistant", "content": []map[string]string{{"type": "text", "text": "echo: " + next}}},
		})
		if err != nil {
			if runCtx.Err() == nil {
				s.log.Warn("publish the answer", "err", err)
				return
			}
			continue
		}
		s.mu.Lock()
		if !s.seen[id] { // its frame is still to come (the socket was replaying)
			s.seen[id] = true
			s.answered++
		}
		s.mu.Unlock()
	}
}

// report publishes an execution_status change.
func (s *session) report(ctx context.Context, status string) error {
	_, err := s.publish(ctx, map[string]any{"kind": "ConversationStateUpdateEvent", "key": "execution_status", "value": status})
	if err != nil {
		s.log.Warn("report execution_status", "status", status, "err", err)
	}
	return err
}
