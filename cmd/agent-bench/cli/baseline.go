package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/agent-server/agent-server/bench/baseline"
)

// serveBaseline is "agent-bench baseline": it serves the reference server
// until SIGINT or SIGTERM, and logs the same "msg=listening addr=..." line
// as agent-server so that one parser finds both.
func serveBaseline(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent-bench baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8001", "listen address host:port")
	key := fs.String("key", "", "the session API key to accept (required)")
	secret := fs.String("jwt-secret", "", "also accept HS256 bearer JWTs signed with this secret")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *key == "" {
		return usageErr("baseline: -key is required")
	}
	srv, err := baseline.New(baseline.Options{Keys: []string{*key}, JWTSecret: *secret})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	log.Info("listening", "addr", ln.Addr().String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
