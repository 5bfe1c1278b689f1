package actors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/agent-server/agent-server/actors"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
	"github.com/agent-server/agent-server/core/memstore"
)

// printTransport stands in for a socket: it passes frames to a channel and
// prints its close. Like every Transport, the first Close wins: a
// conversation stopping at shutdown may close a socket the supervisor
// already closed.
type printTransport struct {
	frames chan []byte
	once   *sync.Once
}

func (p printTransport) Send(frame []byte) bool { p.frames <- frame; return true }
func (p printTransport) Close(d core.Disconnect) {
	p.once.Do(func() { fmt.Println("closed:", d.Code) })
}

// oneChain serves the same chain for every route.
type oneChain struct{ c *core.Chain }

func (o oneChain) Chain(core.Route) *core.Chain { return o.c }

// anyone allows every request.
type anyone struct{}

func (anyone) Name() string { return "anyone" }
func (anyone) Authenticate(context.Context, *core.Request) core.Result {
	return core.Allowed(&core.Principal{Subject: "anyone"})
}

// Example shows the edge's side of the actors: authenticate, connect a
// transport to a conversation, watch an event posted over REST arrive, and
// see the socket closed with 1001 at shutdown.
func Example() {
	ctx := context.Background()
	chain, _ := core.NewChain(core.RouteEvents, anyone{})
	sys, err := actors.New(actors.Options{Store: memstore.New(), Chains: oneChain{chain}, Limits: config.Default().Limits})
	if err != nil {
		panic(err)
	}
	defer sys.Shutdown(ctx)

	res := sys.Authenticate(ctx, &core.Request{Route: core.RouteEvents})
	fmt.Println("decision:", res.Decision)

	conv, _, _ := sys.CreateConversation(ctx, &core.Conversation{ID: core.NewID(), ExecutionStatus: core.StatusIdle})
	t := printTransport{frames: make(chan []byte, 16), once: new(sync.Once)}
	sys.Connect(t, res.Principal, conv.ID, actors.Replay{})
	fmt.Println("first frame:", kind(<-t.frames))

	body := core.MessageBody(&core.UserMessage{Role: "user", Content: []core.ContentPart{{Type: "text", Text: "hi"}}})
	if _, err := sys.PostEvent(ctx, conv.ID, core.SourceAgent, core.KindMessage, body); err != nil {
		panic(err)
	}
	fmt.Println("then:", kind(<-t.frames))
	// Output:
	// decision: allow
	// first frame: ConversationStateUpdateEvent full_state
	// then: MessageEvent
	// closed: 1001
}

func kind(frame []byte) string {
	var f struct{ Kind, Key string }
	_ = json.Unmarshal(frame, &f)
	if f.Key != "" {
		return f.Kind + " " + f.Key
	}
	return f.Kind
}
