package core

import "fmt"

// WebSocket close codes the server sends. Clients of the OpenHands protocol
// treat 4001 and 4004 as fatal, 1013 as "try again later", and reconnect with
// backoff on anything else.
const (
	CloseNormal             = 1000
	CloseGoingAway          = 1001 // server shutdown
	CloseMessageTooBig      = 1009 // frame over limits.max_frame_bytes
	CloseInternalError      = 1011 // the connection's actor crashed
	CloseServiceRestart     = 1012 // the node restarts (cluster mode: it left the cluster); reconnect
	CloseTryAgainLater      = 1013 // over limits.subscribers_per_conversation, or the store is unreachable
	CloseAuthFailed         = 4001 // authentication failed, revoked or expired
	CloseForbidden          = 4003 // the principal may not open this conversation
	CloseConversationNotFnd = 4004 // unknown or deleted conversation
	CloseSlowConsumer       = 4008 // the client could not keep up
)

// Disconnect is a reason to close a WebSocket: a close code and a reason
// text that is safe to show the client.
type Disconnect struct {
	Code   uint16
	Reason string
}

// Error returns the code and reason.
func (d Disconnect) Error() string { return fmt.Sprintf("disconnect %d: %s", d.Code, d.Reason) }

// The disconnects the server uses.
var (
	DisconnectShutdown      = Disconnect{CloseGoingAway, "Server shutting down"}
	DisconnectRestart       = Disconnect{CloseServiceRestart, "Server restarting; reconnect"}
	DisconnectAuthFailed    = Disconnect{CloseAuthFailed, "Authentication failed"}
	DisconnectRevoked       = Disconnect{CloseAuthFailed, "Credential revoked"}
	DisconnectExpired       = Disconnect{CloseAuthFailed, "Credential expired"}
	DisconnectNotFound      = Disconnect{CloseConversationNotFnd, "Conversation not found"}
	DisconnectTooMany       = Disconnect{CloseTryAgainLater, "Too many subscribers"}
	DisconnectUnavailable   = Disconnect{CloseTryAgainLater, "Store unavailable"}
	DisconnectInternalError = Disconnect{CloseInternalError, "Internal error"}
	DisconnectTooBig        = Disconnect{CloseMessageTooBig, "Message too big"}
	DisconnectSlowConsumer  = Disconnect{CloseSlowConsumer, "slow consumer"}
)
