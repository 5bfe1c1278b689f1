package cluster

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
	"github.com/agent-server/agent-server/tests/testbin"
)

// runtimeKey is the agent runtime's key (auth.runtime_keys).
const runtimeKey = "cluster-runtime-key"

// An agent runtime (agent-echo, the real binary) attached through a node
// that does not own its conversation serves it as on a single node: the
// run command crosses to it from the owner, its answer is stored by the
// owner and reaches a client socket on a third node, and ask_agent's reply
// comes back across nodes to the REST caller, each after longer than one
// attempt of a cluster call.
func TestRuntimeThroughNonOwner(t *testing.T) {
	c := startCluster(t, &cluster{t: t, dsn: pgtest.DSN(t), env: []string{"AGENT_SERVER_AUTH__RUNTIME_KEYS=" + runtimeKey}}, 3)
	id := c.nodes[0].createConversation()
	conv := "/api/conversations/" + id
	// The first post activates the conversation on some node.
	if code, b := c.nodes[0].request("POST", conv+"/events", map[string]any{"role": "user", "content": []map[string]string{{"type": "text", "text": "hello"}}}); code != http.StatusOK {
		t.Fatalf("post: %d %s", code, b)
	}
	var owner *node
	for n, k := range owned(c) {
		if k == 1 {
			owner = n
		}
	}
	if owner == nil {
		t.Fatalf("no node owns the new conversation: %v", owned(c))
	}
	var others []*node
	for _, n := range c.nodes {
		if n != owner {
			others = append(others, n)
		}
	}
	runtimeNode, clientNode := others[0], others[1]

	var log testbin.Buffer
	// Each answer takes longer than one attempt of a cluster call (3 s):
	// a request the owner answers after a wait must not be sent again.
	echo := exec.Command(filepath.Join(binDir, "agent-echo"), "-server", "http://"+runtimeNode.Addr, "-conversation", id, "-delay", "3500ms")
	echo.Env = []string{"AGENT_RUNTIME_KEY=" + runtimeKey, "PATH=" + os.Getenv("PATH")}
	echo.Stderr = &log
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = echo.Process.Kill()
		_ = echo.Wait()
		if t.Failed() {
			t.Logf("agent-echo's log:\n%s", lastLines(log.String(), 40))
		}
	})

	r := &reader{t: t, id: id}
	conn, err := dial(clientNode, id, "") // no replay: it gets what follows the message
	if err != nil {
		t.Fatal(err)
	}
	r.follow(conn)
	// The runtime attaches asynchronously: run until a runtime takes it.
	waitFor(t, "a run the runtime takes", 20*time.Second, func() bool {
		code, _ := clientNode.request("POST", conv+"/run", nil)
		return code == http.StatusOK || code == http.StatusConflict
	})
	waitFor(t, "the runtime's answer on a socket on a third node", 20*time.Second, func() bool {
		for _, e := range r.events() {
			if e.text() == "echo: hello" {
				return true
			}
		}
		return false
	})
	code, b := clientNode.request("POST", conv+"/ask_agent", map[string]string{"question": "where are you?"})
	if code != http.StatusOK || string(b) != `{"response":"echo: where are you?"}` {
		t.Errorf("ask_agent through %s: %d %s", clientNode.name, code, b)
	}
	sameAsLog(t, "the client socket", r.events(), logOf(t, owner, id)[1:]) // all but the message before it attached
}
