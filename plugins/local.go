package plugins

import (
	"context"
	"fmt"

	"github.com/agent-server/agent-server/core"
)

// Local runs a Plugin in the server's own process as a core.Authenticator:
// the same Info, Configure and input skipping as a plugin process, without
// the RPC, the supervision or the cache. Tests and benchmarks use it, and so
// can a server that links a plugin in.
type Local struct {
	name   string
	inputs Inputs
	impl   Plugin
}

// NewLocal calls Info and Configure on p and returns it as an authenticator
// called name. Keys in req.KeyDigests must already be "sha256:<hex>"; see
// KeyDigests.
func NewLocal(ctx context.Context, name string, p Plugin, req ConfigureRequest) (*Local, error) {
	info := p.Info(ctx)
	if err := p.Configure(ctx, req); err != nil {
		return nil, fmt.Errorf("plugin %s: bad plugin config: %w", name, err)
	}
	in := info.Inputs
	if ic, ok := p.(InputsConfigurer); ok {
		in = ic.ConfiguredInputs()
	}
	in.Headers = canonicalHeaders(in.Headers)
	return &Local{name: name, inputs: in, impl: p}, nil
}

// Name returns the name the authenticator was created with.
func (l *Local) Name() string { return l.name }

// Authenticate abstains when none of the plugin's inputs is present and
// otherwise calls the plugin directly.
func (l *Local) Authenticate(ctx context.Context, req *core.Request) core.Result {
	if !l.inputs.empty() && !l.inputs.present(req) {
		return core.Abstained()
	}
	return l.impl.Authenticate(ctx, req)
}

// KeyDigests converts session API keys, plaintext or "sha256:<hex>", into
// the "sha256:<hex>" digests plugins receive.
func KeyDigests(keys []string) ([]string, error) { return keyDigests(keys) }

var _ core.Authenticator = (*Local)(nil)
