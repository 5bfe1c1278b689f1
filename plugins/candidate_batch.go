package plugins

// CANDIDATE (measured, then removed): coalescing the calls that arrive
// while a batch RPC is in flight into the next one.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

type batchClient struct {
	rpc authpb.AuthenticatorClient

	mu      sync.Mutex
	queue   []*authpb.Call
	pending map[uint64]*pendingCall
	lastID  uint64
	busy    bool
}

func (c *batchClient) authenticate(ctx context.Context, req *core.Request, in Inputs, release func()) core.Result {
	call := &authpb.Call{Request: requestToFlat(req, in)}
	p := &pendingCall{reply: make(chan core.Result, 1), release: release}
	if dl, ok := ctx.Deadline(); ok {
		p.deadline = dl
		call.TimeoutMicros = max(1, time.Until(dl).Microseconds())
	}
	c.mu.Lock()
	c.lastID++
	call.Id = c.lastID
	c.pending[call.Id] = p
	c.queue = append(c.queue, call)
	start := !c.busy
	c.busy = true
	c.mu.Unlock()
	if start {
		go c.flush()
	}
	select {
	case res := <-p.reply:
		return res
	case <-ctx.Done():
		return core.Failed(fmt.Errorf("authenticate: %w", ctx.Err()))
	}
}

func (c *batchClient) flush() {
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		if len(batch) == 0 {
			c.busy = false
			c.mu.Unlock()
			return
		}
		var longest int64
		for _, call := range batch {
			longest = max(longest, call.TimeoutMicros)
		}
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(longest)*time.Microsecond+time.Second)
		resp, err := c.rpc.AuthenticateBatch(ctx, &authpb.Calls{Calls: batch})
		cancel()
		c.mu.Lock()
		var got []*pendingCall
		var res []core.Result
		if err != nil {
			for _, call := range batch {
				if p, ok := c.pending[call.Id]; ok {
					delete(c.pending, call.Id)
					got, res = append(got, p), append(res, core.Failed(fmt.Errorf("batch rpc: %w", rpcError(err))))
				}
			}
		} else {
			for _, r := range resp.GetReplies() {
				if p, ok := c.pending[r.GetId()]; ok {
					delete(c.pending, r.GetId())
					got, res = append(got, p), append(res, resultFromPB(r.GetResponse()))
				}
			}
		}
		c.mu.Unlock()
		for k, p := range got {
			p.reply <- res[k]
			p.release()
		}
	}
}

// AuthenticateBatch serves a batch (plugin side).
func (s *grpcServer) AuthenticateBatch(ctx context.Context, msg *authpb.Calls) (*authpb.Replies, error) {
	var mu sync.Mutex
	var replies []*authpb.Reply
	var wg sync.WaitGroup
	wg.Add(len(msg.GetCalls()))
	w := newInlineBatchWriter(func(rs []*authpb.Reply) error {
		mu.Lock()
		for _, r := range rs {
			replies = append(replies, r)
			wg.Done()
		}
		mu.Unlock()
		return nil
	}, func(error) {})
	b := newCallBatch(ctx, msg.GetCalls(), w)
	for k := range b.calls {
		go s.serveCall(b, k)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return &authpb.Replies{Replies: replies}, nil
}
