package plugins

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"io"
	"net"
	"sync"
	"time"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// sweepEvery bounds how often a full cache scans for expired entries.
const sweepEvery = time.Second

// decisionCache remembers plugin decisions so a repeated credential costs no
// RPC. Entries are keyed by HMAC-SHA256 under a random per-process secret of
// the plugin's name, the route and the values of the plugin's declared
// inputs: the credential itself is never stored. A plugin may shorten an
// entry's life, or forbid it, with Result.MaxAge. Allow and Deny (and
// Abstain) have separate TTLs, an Allow never outlives its principal, and
// Error is never cached.
type decisionCache struct {
	allowTTL time.Duration
	denyTTL  time.Duration
	max      int
	now      func() time.Time
	macs     sync.Pool // of *keyMAC, HMAC-SHA256 under the secret

	mu        sync.Mutex
	entries   map[cacheKey]cacheEntry
	lastSweep time.Time
	// epoch counts purges. A call reads it before it asks a process and
	// hands it to put, which stores nothing if a purge came between: a
	// decision made under a config that a reload has since replaced
	// (the call was in the process as the keys rotated) is not cached.
	epoch uint64
}

type cacheKey [sha256.Size]byte

type cacheEntry struct {
	res     core.Result
	expires time.Time
}

// newDecisionCache returns nil when the cache is disabled; a nil cache is
// valid and caches nothing.
func newDecisionCache(cfg config.Cache) (*decisionCache, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	c := &decisionCache{
		allowTTL: orDefault(cfg.AllowTTL, defaults.Auth.Cache.AllowTTL),
		denyTTL:  orDefault(cfg.DenyTTL, defaults.Auth.Cache.DenyTTL),
		max:      cfg.MaxEntries,
		now:      time.Now,
		entries:  make(map[cacheKey]cacheEntry),
	}
	if c.max <= 0 {
		c.max = defaults.Auth.Cache.MaxEntries
	}
	c.macs.New = func() any { return &keyMAC{mac: hmac.New(sha256.New, secret), buf: make([]byte, 0, keyBufferSize)} }
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// key derives the cache key for plugin deciding req by its inputs in. Every
// variable-length field is length-prefixed so distinct inputs never collide.
// It runs on every authentication (twice for a chain that does not settle),
// so the fields go to the MAC through one pooled buffer: a write per string
// through hash.Hash made each a copy on the heap.
func (c *decisionCache) key(plugin string, req *core.Request, in Inputs) cacheKey {
	m := c.macs.Get().(*keyMAC)
	m.mac.Reset()
	m.put(plugin)
	m.put(string(req.Route))
	for _, name := range in.QueryParams {
		m.put("q")
		m.putAll(name, req.Query[name])
	}
	for _, name := range in.Headers {
		m.put("h")
		m.putAll(name, headerValues(req.Header, name))
	}
	if in.Subprotocol {
		m.putAll("s", req.Subprotocols)
	}
	if in.FirstMessage {
		m.put("f")
		m.putBytes(req.FirstMessage)
	}
	if in.Request {
		m.put("r")
		m.put(req.Method)
		m.put(req.Path)
		m.put(req.Origin)
		m.put(clientHost(req.RemoteAddr))
	}
	if in.ClientCertificate {
		m.put("c")
		m.buf = binary.AppendUvarint(m.buf, uint64(len(req.ClientCertificates)))
		for _, c := range req.ClientCertificates {
			m.putBytes(c.Raw)
		}
	}
	m.flush()
	var k cacheKey
	m.mac.Sum(k[:0])
	c.macs.Put(m)
	return k
}

// keyMAC is an HMAC under the cache's secret with a buffer in front of it.
type keyMAC struct {
	mac hash.Hash
	buf []byte
}

// keyBufferSize is what a keyMAC buffers before it writes to the MAC; a
// longer value (a first message, a certificate) goes to it directly.
const keyBufferSize = 1 << 10

// put adds s, length-prefixed.
func (m *keyMAC) put(s string) {
	m.buf = binary.AppendUvarint(m.buf, uint64(len(s)))
	if len(m.buf)+len(s) > keyBufferSize {
		m.flush()
		io.WriteString(m.mac, s)
		return
	}
	m.buf = append(m.buf, s...)
}

// putBytes is put for bytes, without the copy a string of them makes.
func (m *keyMAC) putBytes(b []byte) {
	m.buf = binary.AppendUvarint(m.buf, uint64(len(b)))
	if len(m.buf)+len(b) > keyBufferSize {
		m.flush()
		m.mac.Write(b)
		return
	}
	m.buf = append(m.buf, b...)
}

// putAll adds tag, then vs' count and each of them.
func (m *keyMAC) putAll(tag string, vs []string) {
	m.put(tag)
	m.buf = binary.AppendUvarint(m.buf, uint64(len(vs)))
	for _, v := range vs {
		m.put(v)
	}
}

// flush writes what is buffered to the MAC.
func (m *keyMAC) flush() {
	m.mac.Write(m.buf)
	m.buf = m.buf[:0]
}

// clientHost is the host of a client's address, without its port: a
// client's next connection comes from another port.
func clientHost(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// get returns a copy of a live entry.
func (c *decisionCache) get(k cacheKey) (core.Result, bool) {
	if c == nil {
		return core.Result{}, false
	}
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[k]
	if ok && !now.Before(e.expires) {
		delete(c.entries, k)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return core.Result{}, false
	}
	res := cloneResult(e.res)
	res.Cached = true
	return res, true
}

// currentEpoch returns the epoch a call that may put its result reads
// before it asks a process.
func (c *decisionCache) currentEpoch() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// put stores res under k for its decision's TTL, capped by the principal's
// expiry and by the plugin's MaxAge, unless the cache was purged since
// epoch was read. Errors, and results whose MaxAge is negative, are never
// stored.
func (c *decisionCache) put(k cacheKey, res core.Result, epoch uint64) {
	if c == nil || res.MaxAge < 0 {
		return
	}
	now := c.now()
	var ttl time.Duration
	switch res.Decision {
	case core.Allow:
		ttl = c.allowTTL
		if res.Principal != nil && !res.Principal.Expiry.IsZero() {
			ttl = min(ttl, res.Principal.Expiry.Sub(now))
		}
	case core.Deny, core.Abstain:
		ttl = c.denyTTL
	default:
		return
	}
	if res.MaxAge > 0 {
		ttl = min(ttl, res.MaxAge)
	}
	if ttl <= 0 {
		return
	}
	e := cacheEntry{res: cloneResult(res), expires: now.Add(ttl)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	if _, exists := c.entries[k]; !exists && len(c.entries) >= c.max {
		c.evictLocked(now)
	}
	c.entries[k] = e
}

// evictLocked makes room for one entry: it drops expired entries at most
// once per sweepEvery and otherwise an arbitrary one.
func (c *decisionCache) evictLocked(now time.Time) {
	if now.Sub(c.lastSweep) >= sweepEvery {
		c.lastSweep = now
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
	}
	for k := range c.entries {
		if len(c.entries) < c.max {
			return
		}
		delete(c.entries, k)
	}
}

// purge empties the cache, and keeps out the results of the calls asked
// before it.
func (c *decisionCache) purge() {
	if c == nil {
		return
	}
	c.mu.Lock()
	clear(c.entries)
	c.epoch++
	c.mu.Unlock()
}

// len returns how many entries the cache holds.
func (c *decisionCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// cloneResult copies the principal so no caller can change a cached entry.
func cloneResult(r core.Result) core.Result {
	if r.Principal != nil {
		p := *r.Principal
		if p.Scopes != nil {
			p.Scopes = append([]string(nil), p.Scopes...)
		}
		if p.Roles != nil {
			p.Roles = append([]string(nil), p.Roles...)
		}
		if p.Claims != nil {
			claims := make(map[string]string, len(p.Claims))
			for k, v := range p.Claims {
				claims[k] = v
			}
			p.Claims = claims
		}
		r.Principal = &p
	}
	return r
}
