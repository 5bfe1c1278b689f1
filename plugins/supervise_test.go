package plugins

import (
	"testing"
	"time"

	"github.com/agent-server/agent-server/core/config"
)

// A healthy process may answer a call as late as the latest deadline of
// its batch, up to auth.rpc_timeout past the call's own: the hang grace
// must exceed that, with room to spare, or a healthy process under a long
// auth.rpc_timeout would be killed as hung.
func TestHangGraceCoversABatchsSpread(t *testing.T) {
	for _, rpcTimeout := range []time.Duration{0, 500 * time.Millisecond, 5 * time.Second, 10 * time.Second, time.Minute} {
		cfg := config.Default()
		cfg.Auth.RPCTimeout = rpcTimeout
		h := NewHost(cfg, nil)
		spread := orDefault(rpcTimeout, defaults.Auth.RPCTimeout)
		if got, want := h.hangGrace, spread+time.Second; got < want || got < 5*time.Second {
			t.Errorf("auth.rpc_timeout %s: hang grace %s, want at least %s and 5s", rpcTimeout, got, want)
		}
	}
}
