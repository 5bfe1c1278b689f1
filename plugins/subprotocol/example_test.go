package subprotocol_test

import (
	"fmt"

	"github.com/agent-server/agent-server/plugins/subprotocol"
)

// A client offers the real protocol and the entry that carries its key;
// the server echoes only the first.
func ExampleEntry() {
	offered := []string{subprotocol.Protocol, subprotocol.Entry("my-key")}
	fmt.Println(offered)
	key, found, reason := subprotocol.Token(offered)
	fmt.Printf("%q %v %q\n", key, found, reason)
	// Output:
	// [agent-server.v1 base64url.bearer.agent-server.bXkta2V5]
	// "my-key" true ""
}
