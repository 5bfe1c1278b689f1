package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/agent-server/agent-server/core/config"
)

// binaryPrefix is how a plugin binary found in plugins.dir is named:
// plugin "query" is <dir>/auth-query.
const binaryPrefix = "auth-"

// validName is what a plugin instance may be called. It keeps a name from
// reaching outside plugins.dir when it becomes a file name.
var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// resolvePath returns the binary for plugin name: plugins.instances.<name>.path
// when set, else <plugins.dir>/auth-<name>. plugins.dir must be a real
// directory, not a symlink, and a binary found in it must not be a symlink.
func resolvePath(cfg config.Plugins, name string) (string, error) {
	if !validName.MatchString(name) {
		return "", fmt.Errorf("plugin name %q: want lower-case letters, digits, '-' or '_'", name)
	}
	if p := cfg.Instances[name].Path; p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("plugin %s: path %s: %w", name, p, err)
		}
		return abs, nil
	}
	if cfg.Dir == "" {
		return "", fmt.Errorf("plugin %s: no path set and plugins.dir is empty", name)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return "", fmt.Errorf("plugins.dir %s: %w", cfg.Dir, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("plugins.dir: %w", err)
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return "", fmt.Errorf("plugins.dir %s is a symlink; refusing it: point plugins.dir at the real directory", dir)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("plugins.dir %s is not a directory", dir)
	}
	path := filepath.Join(dir, binaryPrefix+name)
	bst, err := os.Lstat(path)
	if err != nil {
		return "", fmt.Errorf("plugin %s: %w", name, err)
	}
	if bst.Mode()&fs.ModeSymlink != 0 {
		return "", fmt.Errorf("plugin %s: %s is a symlink; refusing it", name, path)
	}
	return path, nil
}

// fileSHA256 returns the lower-case hex SHA-256 of the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// normalizePin accepts a pin as 64 hex digits with an optional "sha256:"
// prefix and returns the bare lower-case hex.
func normalizePin(pin string) (string, error) {
	p := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(pin, "sha256:")))
	if b, err := hex.DecodeString(p); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("sha256 pin %q: want 64 hex digits", pin)
	}
	return p, nil
}

// PinMismatchError reports a plugin binary whose hash is not its pin.
type PinMismatchError struct {
	Path     string
	Expected string
	Actual   string
}

// Error names the file and both hashes.
func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("checksum mismatch for %s: expected sha256 %s, got %s", e.Path, e.Expected, e.Actual)
}

// verifyPin checks the binary at path against pin, which may be empty (no
// pin). It returns the binary's actual hash either way.
func verifyPin(path, pin string) (string, error) {
	actual, err := fileSHA256(path)
	if err != nil {
		return "", err
	}
	if pin == "" {
		return actual, nil
	}
	want, err := normalizePin(pin)
	if err != nil {
		return actual, err
	}
	if actual != want {
		return actual, &PinMismatchError{Path: path, Expected: want, Actual: actual}
	}
	return actual, nil
}
