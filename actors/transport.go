package actors

import (
	"time"

	"github.com/agent-server/agent-server/core"
)

// Transport is the write side of one client connection. The edge implements
// it; the actors only ever hand it finished frames.
//
// Send queues one already-serialized text frame and never blocks. It reports
// false when the frame was not queued: the connection is closing, or the
// frame would overflow the connection's send queue, in which case the
// transport closes itself (4008 "slow consumer"). Close queues a close frame
// after whatever is already queued and ends the connection; the first Close
// wins and later calls do nothing. Both are safe for concurrent use.
type Transport interface {
	Send(frame []byte) bool
	Close(d core.Disconnect)
}

// Backlogger is implemented by a Transport that can tell how full its send
// queue is. A replay to such a transport is paced to half the bound, so a
// long history never trips the slow-consumer limit; to any other transport
// it is sent at once.
type Backlogger interface {
	Backlog() (queued, limit int)
}

// ReplayMode selects which past events a new connection receives after its
// full_state frame.
type ReplayMode int

// The replay modes of the OpenHands protocol, plus after_id.
const (
	ReplayNone    ReplayMode = iota // live events only
	ReplayAll                       // resend_all=true or resend_mode=all: the whole log, oldest first
	ReplaySince                     // resend_mode=since: events with timestamp >= Since
	ReplayAfterID                   // after_id: exactly the events after AfterID
)

// Replay describes the history a connection asked for.
type Replay struct {
	Mode    ReplayMode
	Since   time.Time // with ReplaySince
	AfterID string    // with ReplayAfterID
}
