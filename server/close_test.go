package server

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/config"
)

// TestSocketSendsOneCloseFrame: a socket's close frame is the only one it
// sends, and its reason never carries a Go error's text. Before, after the
// server's own close frame and the client's answer, gws "answered" with a
// second close; and the close at limits.idle_timeout was gws's, its reason
// the read error, naming the server's address and port.
func TestSocketSendsOneCloseFrame(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*config.Config)
		key  string
		// answer sends the client's close back after the server's.
		answer     bool
		wantReason string
	}{
		{"the server's close, answered", func(c *config.Config) { c.Auth.RejectWith = config.RejectWithClose }, "nope", true, ""},
		{"idle timeout", func(c *config.Config) { c.Limits.IdleTimeout = 300 * time.Millisecond }, goodKey, false, "idle timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEdge(t, tt.cfg)
			c, br := dialEdge(t, e)
			if _, err := io.WriteString(c, upgradeHead(e.conversation(t), tt.key, "")); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			var payload []byte
			for { // past full_state, to the close frame
				op, p, err := readRawFrame(br)
				if err != nil {
					t.Fatalf("no close frame: %v", err)
				}
				if op == opClose {
					payload = []byte(p)
					break
				}
			}
			reason := string(payload[2:])
			if tt.wantReason != "" && reason != tt.wantReason {
				t.Errorf("close reason %q, want %q", reason, tt.wantReason)
			}
			if local := c.RemoteAddr().String(); strings.Contains(reason, local) || strings.Contains(reason, "tcp") {
				t.Errorf("close reason %q names an address", reason)
			}
			if tt.answer {
				mask := []byte{1, 2, 3, 4}
				echo := append([]byte{0x80 | opClose, 0x80 | byte(len(payload))}, mask...)
				for i, b := range payload {
					echo = append(echo, b^mask[i%4])
				}
				if _, err := c.Write(echo); err != nil {
					t.Fatal(err)
				}
			}
			if op, p, err := readRawFrame(br); err == nil {
				t.Errorf("after its close frame the server sent another: op %d payload %q", op, p)
			}
		})
	}
}
