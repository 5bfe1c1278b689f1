// Package authpb holds the gRPC wire contract between agent-server and its
// authenticator plugins: auth.proto and the code protoc generates from it.
// Plugin authors never import it; they use package plugins.
//
// Regenerate from the repository root with:
//
//	protoc --plugin=protoc-gen-go="$(go tool -n protoc-gen-go)" \
//	  --plugin=protoc-gen-go-grpc="$(go tool -n protoc-gen-go-grpc)" \
//	  --go_out=. --go_opt=paths=source_relative \
//	  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
//	  plugins/authpb/auth.proto
package authpb
