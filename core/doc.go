// Package core holds agent-server's domain: authentication requests and
// decisions, the authenticator chain, principals, API keys, conversations
// and their OpenHands state (state.go renders it per channel, settings.go
// changes it), events and the OpenHands event models (kinds.go), the agent
// runtime's wire contract (runtime.go), the store contract and WebSocket
// close codes.
//
// core imports nothing else from this module and nothing about transports or
// actors: the edge (server), the actors and the plugin host all depend on it,
// never the other way round.
package core
