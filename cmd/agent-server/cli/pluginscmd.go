package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agent-server/agent-server/plugins"
)

// pluginsList prints what the configured chains would load.
func pluginsList(args []string, stdout io.Writer) error {
	f, err := parseFlags("plugins list", args, false)
	if err != nil {
		return err
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := newLogger(cfg.Log, os.Stderr)
	descs, err := plugins.Describe(ctx, cfg, log.With("component", "plugins"))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tPATH\tSHA256\tPINNED\tINPUTS")
	for _, d := range descs {
		version := d.Version
		if d.Err != nil {
			version = "error"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", d.Name, version, d.Path, d.SHA256, d.Pinned, inputs(d.Inputs))
	}
	tw.Flush()
	return err
}

func inputs(in plugins.Inputs) string {
	var parts []string
	for _, q := range in.QueryParams {
		parts = append(parts, "query:"+q)
	}
	for _, h := range in.Headers {
		parts = append(parts, "header:"+h)
	}
	if in.Subprotocol {
		parts = append(parts, "subprotocol")
	}
	if in.FirstMessage {
		parts = append(parts, "first_message")
	}
	if in.ClientCertificate {
		parts = append(parts, "client_certificate")
	}
	if in.Request {
		parts = append(parts, "request")
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// pluginsVerify checks every sha256 pin and fails on any mismatch.
func pluginsVerify(args []string, stdout io.Writer) error {
	f, err := parseFlags("plugins verify", args, false)
	if err != nil {
		return err
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	checks, err := plugins.Verify(cfg)
	for _, c := range checks {
		switch {
		case c.Err != nil:
			fmt.Fprintf(stdout, "FAIL  %s: %v\n", c.Name, c.Err)
		case c.Expected == "":
			fmt.Fprintf(stdout, "ok    %s  %s  sha256 %s (not pinned)\n", c.Name, c.Path, c.Actual)
		default:
			fmt.Fprintf(stdout, "ok    %s  %s  sha256 %s (pin matches)\n", c.Name, c.Path, c.Actual)
		}
	}
	if err != nil {
		return fmt.Errorf("plugin verification failed")
	}
	return nil
}
