package echo

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

func TestText(t *testing.T) {
	for in, want := range map[string]string{
		`"plain"`: "plain",
		`[{"type":"text","text":"a"},{"type":"image","image_urls":["u"]},{"type":"text","text":"b"}]`: "a b",
		`[]`: "",
	} {
		if got := text(json.RawMessage(in)); got != want {
			t.Errorf("text(%s) = %q, want %q", in, got, want)
		}
	}
}

// Only a refused credential or a gone conversation stops the reconnects.
func TestFatal(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&websocket.CloseError{Code: 4004}, true},
		{&websocket.CloseError{Code: 4001}, true},
		{&websocket.CloseError{Code: 1013}, false},
		{&websocket.CloseError{Code: 1001}, false},
		{&handshakeError{status: 403}, true},
		{&handshakeError{status: 503}, false},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), false},
	}
	for _, tt := range tests {
		if _, got := fatal(tt.err); got != tt.want {
			t.Errorf("fatal(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestMainRefusesBadInvocations(t *testing.T) {
	env := func(k string) string { return map[string]string{KeyEnv: "k"}[k] }
	for _, tt := range []struct {
		args   []string
		getenv func(string) string
		want   string
	}{
		{nil, func(string) string { return "" }, KeyEnv},
		{[]string{"-server", "ftp://x"}, env, "-server must be http(s)://host:port"},
		{[]string{"-log-level", "loud"}, env, "-log-level"},
	} {
		var out strings.Builder
		if code := Main(tt.args, tt.getenv, &out); code != 2 || !strings.Contains(out.String(), tt.want) {
			t.Errorf("Main(%v) = %d, %q; want 2 and a message naming %s", tt.args, code, out.String(), tt.want)
		}
	}
}
