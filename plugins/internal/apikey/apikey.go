// Package apikey holds what the key plugins (query, header, bearer,
// subprotocol, first_message) share: matching a presented key against the
// configured session API keys and agent runtime keys, held as digests.
package apikey

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins"
)

// Version is the version the built-in key plugins report.
const Version = "1.0.0"

// Checker matches keys against the set received in Configure. The zero
// value is ready to be configured and safe for concurrent use.
type Checker struct {
	keys atomic.Pointer[keySets]
}

// keySets are the client keys and the runtime keys, swapped together.
type keySets struct {
	client, runtime *core.KeySet
}

// Configure loads the key digests. The key plugins take no config of their
// own, so any config field is an error.
func (c *Checker) Configure(req plugins.ConfigureRequest) error {
	var none struct{}
	if err := req.DecodeConfig(&none); err != nil {
		return fmt.Errorf("%w (this plugin takes no config: keys come from auth.keys)", err)
	}
	ks, err := core.NewKeySet(req.KeyDigests)
	if err != nil {
		return err
	}
	if ks.Len() == 0 {
		return errors.New("no session API keys configured: set auth.keys or OH_SESSION_API_KEYS")
	}
	rt, err := core.NewKeySet(req.RuntimeKeyDigests)
	if err != nil {
		return fmt.Errorf("runtime keys: %w", err)
	}
	c.keys.Store(&keySets{client: ks, runtime: rt})
	return nil
}

// Check decides a present, non-empty key: Allow with the key's fingerprint
// as subject (and the runtime role for a runtime key), or Deny. It never
// puts the key in the result. Both sets are always searched, so the time
// taken does not tell a client key from a runtime key.
func (c *Checker) Check(key string) core.Result {
	ks := c.keys.Load()
	if ks == nil {
		return core.Failed(errors.New("plugin is not configured"))
	}
	client, runtime := ks.client.Match(key), ks.runtime.Match(key)
	switch {
	case runtime:
		return core.Allowed(&core.Principal{Subject: core.KeyFingerprint(key), Roles: []string{core.RoleRuntime}})
	case client:
		return core.Allowed(&core.Principal{Subject: core.KeyFingerprint(key)})
	}
	return core.Denied("invalid API key")
}
