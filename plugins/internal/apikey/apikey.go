// Package apikey holds what the query, header and bearer plugins share:
// matching a presented session API key against the configured key digests.
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
	keys atomic.Pointer[core.KeySet]
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
	c.keys.Store(ks)
	return nil
}

// Check decides a present, non-empty key: Allow with the key's fingerprint
// as subject, or Deny. It never puts the key in the result.
func (c *Checker) Check(key string) core.Result {
	ks := c.keys.Load()
	if ks == nil {
		return core.Failed(errors.New("plugin is not configured"))
	}
	if !ks.Match(key) {
		return core.Denied("invalid API key")
	}
	return core.Allowed(&core.Principal{Subject: core.KeyFingerprint(key)})
}
