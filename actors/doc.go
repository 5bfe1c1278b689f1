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
// System.Authenticate runs a handshake's chain (fetched from Chains on
// every request, as the plugin host may swap chains) on a pooled
// goroutine, and answers the caller on a one-slot channel; a chain its
// authenticators settle at once (cached decisions) it answers on the
// caller's goroutine. The connection supervisor runs the chains of first
// messages (below) the same way, off its mailbox, which never waits for a
// plugin. After the edge has upgraded
// the socket, System.Connect (or ConnectSocket) asks it (spawnConnection,
// answered on a one-slot channel) to spawn the connection actor as its
// child. It keeps what each child's chain reads of its handshake request
// (core.Chain.Retain): System.Revalidate sends it revalidateConnections, and a
// goroutine re-runs those credentials through the current chains and sends
// closeConnection (4001 "Credential revoked") to the children no longer
// allowed, then answers on a one-slot channel.
//
// A connection actor whose handshake carried no credential (the edge
// upgraded it for first_message) starts authenticating: its first frame
// goes to the supervisor as authenticate with the actor's PID, the chain
// runs off both mailboxes, and authenticated comes back to the actor, which
// attaches on Allow and closes with 4001 otherwise, or when its timer sends
// firstMessageTimedOut. Frames that arrive meanwhile wait unprocessed.
//
// A connection actor attaching asks the registry to attach it
// (attachConnection); once attached (connectionAttached) it parses the
// client's frames (deliverFrame): a user message becomes appendEvent to its
// conversation, an auth frame is ignored, anything else earns that client a
// ServerErrorEvent. Past limits.messages_per_second (bursts up to
// limits.message_burst) a frame is dropped with a rate_limited
// ServerErrorEvent; the socket stays open.
// It closes its socket when told to (closeConnection), when
// the peer goes (peerClosed) or when its principal expires
// (credentialExpired). As it stops it sends detachConnection: to its
// conversation once attached, or through the registry (which forwards it
// behind the attach, and never spawns for it) while the answer may still be
// on the way. Conversations do not watch their connections, nor
// connections their conversation: protoactor keeps removed watchers' PIDs
// in the spare capacity of its sets, and a PID caches its process, so every
// closed socket would stay reachable for as long as its conversation runs.
// For the same reason the supervisor and the registry clear the slot a
// stopped child vacated in protoactor's child set (releaseStoppedChild).
// protoactor's process registry, where every actor's ID is looked up, is
// striped over 16 buckets per CPU instead of its 1,024 (processes.go), so the
// Go maps it keeps follow the actors alive at once, not every actor ever
// spawned.
//
// The registry maps conversation IDs to conversation actors. It never reads
// the store: on the first message for a conversation it spawns the actor,
// and it hands it every attachConnection and appendEvent wrapped in routed,
// (and a detachConnection for a running actor) with the sender, counting
// them per actor. The registry runs
// deleteConversation itself (the store delete in a goroutine that answers
// conversationRemoved, then the actor closes its sockets with 4004 and
// answers, then a poison pill), so spawning, routing and deleting never race.
//
// A conversation actor is the only writer of its conversation's log. On
// start it loads its metadata and where its log ends (conversationLoaded,
// from a goroutine; not the history), stashing routed messages until then;
// a conversation missing from the store refuses them (4004, ErrNotFound)
// and asks the registry to forget it (conversationEnded). It assigns event
// IDs, Seq (last+1) and UTC timestamps that never decrease, seals each event
// once and hands it to the writer (writer.go), a goroutine that commits
// everything queued by every conversation in one Store.AppendBatch (one
// transaction, one fsync) and reports eventsStored. Only then is the event
// fanned out and the append answered: an event is durable before anyone
// sees it. Attach and the full_state frame (from the actor's copy of the
// metadata) happen in one Receive, which also starts the replay: a
// replaying subscriber has a Seq cursor; its start (after_id, since) is
// looked up in the store's indexes off the mailbox (replayResolved), pages
// of the log are read off the mailbox (replayRead), and live fan-out skips
// it until its cursor reaches the durable end of the log; it turns live in
// the same Receive that sends it the last event, so nothing is lost or sent
// twice. To a Transport that reports its backlog (Backlogger) the replay is
// paced to half the send-queue bound, resuming on a timer (resumeReplay), so
// a long history never looks like a slow client.
//
// Passivation: a conversation actor with no subscriber, nothing in flight
// and no message for conversations.idle_timeout (its own timer, checkIdle,
// not protoactor's ReceiveTimeout) sends the registry conversationIdle
// with how many routed messages it handled. If that is all the registry
// routed to it (none waits in its mailbox), the registry stops it and keeps
// the conversation as known but not running (a nil entry, a few dozen
// bytes); the next message spawns a fresh actor that loads from the store.
//
// # Which path each message takes
//
// The messages (messages.go) are unexported: only System and Conn send them
// from outside the actors. Control goes through actor messages: authenticate, authenticated,
// spawnConnection, attachConnection, connectionAttached, detachConnection,
// closeConnection, closeConnections, deleteConversation, conversationEnded,
// peerClosed, credentialExpired, attachTimedOut, firstMessageTimedOut,
// revalidateConnections,
// and inbound frames (deliverFrame, then
// appendEvent, answered by eventAppended or commandFailed once durable).
// Registry to conversation: routed. Goroutines and the writer report back
// to the actor that started them: conversationLoaded, replayResolved,
// replayRead, eventsStored (conversation actor), conversationRemoved
// (registry); a conversation actor's idle timer sends it checkIdle.
// Conversation to registry: conversationIdle, conversationEnded.
//
// Outbound data does not: a conversation actor calls each subscriber's
// Transport.Send with the event's sealed bytes, directly, in the Receive
// that learns it is durable (eventsStored). One actor message per subscriber per event (about 0.3 µs each)
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
// connection or conversation notices. A connection that stops while still
// authenticating reports a failure through its Done callback, so the edge's
// per-address count of unauthenticated sockets never leaks.
//
// Conversation actors: the registry's one-for-one strategy stops the actor
// that panicked rather than restarting it in place, which would silently
// lose its subscriber set. Its Stopping handler closes every attached
// socket with 1011, so clients reconnect and resync; the registry marks it
// not running, and the next message for the conversation spawns a fresh
// actor that reloads from the store.
//
// A failed write does not tear a conversation down. When the store could
// not write (unreachable: core.ErrUnavailable, or the commit failed), the
// actor fails every append in flight (REST answers 503 with Retry-After, a
// socket gets a ServerErrorEvent store_unavailable), assigns Seq again from
// the durable end of the log, and moves its append generation on (gen on
// every writeRequest and eventsStored), so the writer's later reports
// about the failed events, which the store refuses as they no longer
// continue the log, are told apart and dropped; the writer's queue is FIFO,
// so those stale events always reach the store before the new ones and can
// never land after them. The sockets stay open. Only when the store
// refuses the write because the log is not where the actor thinks
// (core.ErrSeqConflict, core.ErrFenced) or the conversation is gone does
// the actor close its sockets (1011, or 4004) and ask the registry
// (conversationEnded) to replace it. A conversation whose load fails
// because the store is unavailable refuses attaches with 1013 and is
// forgotten, so the next use loads again. Appends pending when an actor
// stops are answered commandFailed (the writer may still commit them).
//
// The supervisor and the registry restart in place after a panic, at most 10
// times in 10 s (a guardian with an explicit restart decider). Restarting
// stops their children first: every socket closes with 1011 and conversation
// actors reload on next use.
//
// # Store calls
//
// No Receive touches the store. Writes go through the writer (appends) or
// a goroutine (the registry's delete); reads (load, replay start, replay
// pages) run in goroutines. Each reports back with a message, so a slow
// disk delays only the conversation whose data it is, never a mailbox.
// System.CreateConversation and System.ForkConversation (fork.go) write
// from the caller's goroutine: a fork is one store call, which never goes
// through the source's actor. Shutdown
// stops the actors, then waits for the writer to commit what it was handed.
// A conversation's state is written by its actor off the mailbox too (one
// UpdateConversation at a time, reported by stateStored).
//
// # The control plane: state and agent runtimes
//
// The conversation actor also owns the conversation's OpenHands state
// (state.go) and its agent runtime (runtime.go). The REST control endpoints
// reach it through System methods (control.go) that send one
// conversation-addressed message each through the registry:
// runConversation, pauseConversation, changeSettings, rejectPending,
// askRuntime, publishEvent and navigateConversation (messages_control.go).
// The actor stamps each event's parent_id and keeps the event tree's HEAD,
// which navigateConversation moves (tree.go) once the appends before it
// are durable, so that the HEAD it records is. A change of state
// replaces the actor's copy of the conversation, appends one
// ConversationStateUpdateEvent per changed key through the writer, and
// writes the conversation to the store from a goroutine; the command is
// answered (commandDone) once both are durable, and a run that ends sends
// every client a full_state.
//
// An agent runtime is a connection actor with Runtime set, spawned for
// /sockets/runtime (its principal must carry core.RoleRuntime). It attaches
// like a client (attachConnection with Runtime), first receiving a state
// frame with the conversation's secrets instead of full_state, and at most
// one is attached per conversation (a second is closed with 1013). Its
// frames become publishEvent (answered eventPublished or publishFailed,
// which it turns into published and error frames) and runtimeReplied.
// Commands for it wait in the conversation's outbox until the events
// before them are durable and its replay has caught up; commands that need
// a runtime when none is attached are parked until one comes
// (runtimeWaitOver ends the wait), and commands it must answer wait for its
// reply (runtimeReplyOver ends that). When the runtime detaches during a
// run, the conversation records a ConversationErrorEvent and status error.
//
// # Cluster mode
//
// With Options.Cluster enabled (and a store that fences: postgres), the
// conversation actor becomes a protoactor cluster kind and four files say
// how it is reached; the actor itself does what it does on a single node,
// through its activation (local, or clusterActivation).
//   - placement.go: protoactor's cluster with the disthash lookup, the
//     membership providers (static, etcd, kubernetes), the hardened remote
//     (mTLS, keepalive, one redial), call (a request to a conversation's
//     activation, wherever it is, retried with backoff inside the caller's
//     deadline), knowing when this node joined, and leaving (closing its
//     sockets with 1012, System.Left) when the others dropped it.
//   - relay.go: remote delivery. On each node one relay per conversation
//     holds that node's sockets in a fanout and subscribes to the owner,
//     which sends each durable event once per relay as sealed bytes. A
//     relay delivers in Seq order, drops what it has seen, reads gaps from
//     the store a page at a time, re-subscribes when its owner goes away or
//     closes (a Closing from an owner it no longer follows is ignored), and
//     renews its subscription every half heartbeat (an owner forgets a
//     relay whose node protoactor reported terminated; a renewal that finds
//     another owner unsubscribes from the old one). Posts and commands
//     from this node go to the owner (System.forward), posts and runtimes'
//     publishes with an idempotency key so that a retry never stores twice.
//     An owner without its conversation (unknown, deleted, unreadable)
//     refuses a subscription with why, and the relay closes its sockets as
//     a single node would (4004, 1013).
//   - fencing.go: each activation takes a new epoch from the store, every
//     append carries it, and an activation whose epoch is stale (found at
//     an append, or by its periodic check) stops; its relays re-subscribe.
//   - wire.go and clusterpb: the protobuf messages between nodes and their
//     conversions; errors cross as codes.
//
// The registry sends attachConnection and detachConnection to the relay of
// the conversation and everything else to the owner.
//
// # Metrics and the audit log
//
// metrics.go holds the system's collectors, created from Options.Metrics
// (nil measures nothing): decisions and chain latency, conversations,
// appends, fan-out, replays and the writer's group commits, and the cluster
// collectors placement registers with watchPlacement. audit.go is where
// every authentication decision is counted and written to Options.Audit,
// once: the edge's through RecordAuth, and the first messages, revocations
// and expiries the actors decide themselves. The authenticate message
// carries the caller's span, so that the plugin calls' spans are its
// children.
package actors
