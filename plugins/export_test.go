package plugins

import "time"

// Hooks for the external tests in package plugins_test.

// SetHangGrace sets how long past its deadline a call may stay unanswered
// before its process counts as hung.
func SetHangGrace(h *Host, d time.Duration) { h.hangGrace = d }

// SetProtocolVersion makes h handshake as if it spoke only protocol v.
func SetProtocolVersion(h *Host, v uint) { h.protocolVersions = []uint{v} }

// RPCCount returns how many Authenticate RPCs h has sent.
func RPCCount(h *Host) int64 { return h.rpcs.Load() }

// CacheLen returns how many decisions h's cache holds.
func CacheLen(h *Host) int { return h.cache.len() }

// MaxCallBytes is the largest encoded request the host sends a plugin.
const MaxCallBytes = maxCallBytes
