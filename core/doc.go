// Package core holds agent-server's domain: authentication requests and
// decisions, the authenticator chain, principals, API keys, conversations,
// events, the store contract and WebSocket close codes.
//
// core imports nothing else from this module and nothing about transports or
// actors: the edge (server), the actors and the plugin host all depend on it,
// never the other way round.
package core
