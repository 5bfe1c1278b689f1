// Package actors runs agent-server's connections and conversations as
// protoactor-go actors. The edge (package server) talks to it through
// System and Conn, and gives it one Transport per socket.
//
// # Actors
//
//	root
//	├── connections   the connection supervisor
//	│   └── one connection actor per WebSocket
//	└── conversations the conversation registry
//	    └── one conversation actor per conversation, spawned on first use
//
// The connection supervisor runs authenticator chains: System.Authenticate
// sends it authenticate, it starts the route's chain (fetched from Chains on
// every request, as the plugin host may swap chains) in a goroutine that
// reports back with authenticated, and it answers the caller on a one-slot
// channel. Its mailbox never waits for a plugin. After the edge has upgraded
// the socket, System.Connect asks it (spawnConnection) to spawn the
// connection actor as its child.
//
// A connection actor attaching asks the registry to attach it
// (attachConnection); once attached (connectionAttached) it parses the
// client's frames (deliverFrame): a user message becomes appendEvent to its
// conversation, an auth frame is ignored, anything else earns that client a
// ServerErrorEvent. It closes its socket when told to (closeConnection), when
// the peer goes (peerClosed), when its principal expires (credentialExpired)
// or when its conversation actor dies.
//
// The registry maps conversation IDs to conversation actors. It reads the
// store once per conversation, on the first message, spawns the actor only
// if the conversation exists, and forwards attachConnection and appendEvent
// to it, keeping the sender. The registry carries out deleteConversation
// itself (store delete, then the actor closes its sockets with 4004, then a
// poison pill), so spawning, routing and deleting never race.
//
// A conversation actor is the only writer of its conversation's log. It
// assigns event IDs, Seq (last+1) and UTC timestamps that never decrease,
// seals each event once, appends it to the store and fans it out. Attach and
// the full_state frame happen in one Receive, which also starts the replay:
// a replaying subscriber has a Seq cursor, reads the log from the store and
// is skipped by live fan-out until its cursor reaches the end of the log;
// it turns live in the same Receive that sends it the last event, so nothing
// is lost or sent twice. To a Transport that reports its backlog
// (Backlogger) the replay is paced to half the send-queue bound, resuming on
// a timer (resumeReplay), so a long history never looks like a slow client.
//
// # Which path each message takes
//
// The messages (messages.go) are unexported: only System and Conn send them
// from outside the actors. Control goes through actor messages: authenticate, authenticated,
// spawnConnection, attachConnection, connectionAttached, detachConnection,
// closeConnection, closeConnections, deleteConversation, conversationEnded,
// peerClosed, credentialExpired, and inbound frames (deliverFrame, then
// appendEvent, answered by eventAppended or commandFailed).
//
// Outbound data does not: a conversation actor calls each subscriber's
// Transport.Send with the event's sealed bytes, directly, in the Receive that
// appended it. One actor message per subscriber per event (about 0.3 µs each)
// would cap fan-out far below what one Send into a bounded queue costs; the
// edge batches whatever is queued per socket into one writev. The full_state,
// replay and ServerErrorEvent frames for one client go the same way; a
// paced replay's timer sends its actor resumeReplay, a control message.
//
// # Supervision
//
// Connection actors: the supervisor's one-for-one strategy has a decider
// that stops the actor that panicked and never restarts it, since its state
// is a socket. Its Stopping handler closes that socket with 1011; no other
// connection or conversation notices.
//
// Conversation actors: the registry's one-for-one strategy stops the actor
// that panicked rather than restarting it in place, which would silently
// lose its subscriber set. Its connections watch it and close with 1011, so
// clients reconnect and resync; the registry forgets it, and the next message
// for the conversation spawns a fresh actor that reloads from the store.
//
// The supervisor and the registry restart in place after a panic, at most 10
// times in 10 s (a guardian with an explicit restart decider). Restarting
// stops their children first: every socket closes with 1011 and conversation
// actors reload on next use.
//
// # Store calls
//
// Store calls are made inline, inside Receive: appends and replay reads by
// the conversation actor, the existence check and the delete by the registry.
// The store is in memory for now, so these are map operations, not I/O. A
// durable store must move them off the mailbox (a writer goroutine that
// reports back) before it lands.
package actors
