package plugins

// Hooks for the external tests in package plugins_test.

// SetProtocolVersion makes h handshake as if it spoke only protocol v.
func SetProtocolVersion(h *Host, v uint) { h.protocolVersions = []uint{v} }

// RPCCount returns how many Authenticate RPCs h has sent.
func RPCCount(h *Host) int64 { return h.rpcs.Load() }

// CacheLen returns how many decisions h's cache holds.
func CacheLen(h *Host) int { return h.cache.len() }
