package release

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/knadh/koanf/parsers/yaml"

	"github.com/agent-server/agent-server/core/config"
)

// Every built-in plugin is released, as plugins/auth-<name> from
// ./cmd/auth-<name>, beside the server, for both architectures, statically
// linked; so adding a plugin without its line in .goreleaser.yaml fails here.
func TestGoreleaserBuildsEveryPlugin(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := yaml.Parser().Unmarshal(b)
	if err != nil {
		t.Fatalf(".goreleaser.yaml: %v", err)
	}
	builds, _ := doc["builds"].([]any)
	got := map[string]string{} // binary -> main
	for _, v := range builds {
		m, _ := v.(map[string]any)
		bin, _ := m["binary"].(string)
		main, _ := m["main"].(string)
		got[bin] = main
		if env := strings.Join(strs(m["env"]), " "); env != "CGO_ENABLED=0" {
			t.Errorf("build %s: env = %q, want CGO_ENABLED=0 (static, for the image)", bin, env)
		}
		if archs := strs(m["goarch"]); !slices.Equal(archs, []string{"amd64", "arm64"}) {
			t.Errorf("build %s: goarch = %v, want [amd64 arm64]", bin, archs)
		}
	}
	want := map[string]string{"agent-server": "./cmd/agent-server"}
	for _, p := range builtinPlugins(t) {
		want["plugins/auth-"+p] = "./cmd/auth-" + p
	}
	for bin, main := range want {
		if got[bin] != main {
			t.Errorf("no build of %s from %s in .goreleaser.yaml (got main %q): add\n  - {<<: *build, id: %s, main: %s, binary: %s}", bin, main, got[bin], filepath.Base(bin), main, bin)
		}
	}
	// Any other command (./cmd/<name>) goes beside the server as <name>.
	for bin, main := range got {
		name := filepath.Base(main)
		wantBin := name
		if strings.HasPrefix(name, "auth-") {
			wantBin = "plugins/" + name
		}
		if _, err := os.Stat(filepath.Join(repoRoot(t), main)); err != nil || bin != wantBin {
			t.Errorf(".goreleaser.yaml builds %s from %s: want ./cmd/<name> built as %s (%v)", bin, main, wantBin, err)
		}
	}
}

func strs(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// Each shipped config loads, and puts the plugins and the data where its
// artifact installs them: the package's and the image's in the installed
// layout, the tarball's beside the file.
func TestShippedConfigs(t *testing.T) {
	root := repoRoot(t)
	tests := []struct {
		file              string
		addr              string
		pluginDir, dbPath string
	}{
		{"deploy/package/config.yaml", "127.0.0.1:8000", "/usr/lib/agent-server/plugins", "/var/lib/agent-server/agent-server.db"},
		{"deploy/image/config.yaml", "0.0.0.0:8000", "/usr/lib/agent-server/plugins", "/var/lib/agent-server/agent-server.db"},
		{"deploy/archive/config.yaml", "127.0.0.1:8000", filepath.Join(root, "deploy/archive/plugins"), filepath.Join(root, "deploy/archive/data/agent-server.db")},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			cfg, err := config.Load(config.Source{File: filepath.Join(root, tt.file), Environ: []string{}})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Server.Addr != tt.addr {
				t.Errorf("server.addr = %q, want %q", cfg.Server.Addr, tt.addr)
			}
			if cfg.Plugins.Dir != tt.pluginDir {
				t.Errorf("plugins.dir = %q, want %q", cfg.Plugins.Dir, tt.pluginDir)
			}
			if cfg.Storage.Driver != "bolt" || cfg.Storage.Path != tt.dbPath {
				t.Errorf("storage = %s %q, want bolt %q", cfg.Storage.Driver, cfg.Storage.Path, tt.dbPath)
			}
		})
	}
}

// The systemd unit runs the packaged config, checks it first, and may write
// where that config keeps its data, and nowhere else.
func TestUnitMatchesPackagedConfig(t *testing.T) {
	root := repoRoot(t)
	unit := readUnit(t, filepath.Join(root, "deploy/package/agent-server.service"))
	cfg, err := config.Load(config.Source{File: filepath.Join(root, "deploy/package/config.yaml"), Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"ExecStartPre":            "/usr/bin/agent-server config check --config /etc/agent-server/config.yaml",
		"ExecStart":               "/usr/bin/agent-server serve --config /etc/agent-server/config.yaml",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"User":                    "agent-server",
		"Group":                   "agent-server",
		"Restart":                 "on-failure",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"CapabilityBoundingSet":   "",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"ReadWritePaths":          filepath.Dir(cfg.Storage.Path),
	} {
		got, ok := unit[key]
		if !ok || got != want {
			t.Errorf("%s = %q (set: %v), want %q", key, got, ok, want)
		}
	}
	// Tens of thousands of sockets need as many descriptors.
	if n, err := strconv.Atoi(unit["LimitNOFILE"]); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE = %q, want at least 65536", unit["LimitNOFILE"])
	}
}

// readUnit reads a systemd unit's Key=Value lines (the last one wins).
func readUnit(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			unit[k] = v
		}
	}
	return unit
}
