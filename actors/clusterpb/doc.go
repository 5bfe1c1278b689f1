// Package clusterpb holds the protobuf messages agent-server nodes send
// each other over protoactor's remote in cluster mode (cluster.proto), and
// their generated Go code. Regenerate with `go tool task proto`. The actors
// package converts them to and from its own messages in one file, wire.go.
package clusterpb
