package release

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agent-server/agent-server/tests/testbin"
)

// key is the session API key the installed servers are started with.
const key = "release-test-key"

// The release artifacts, built by goreleaser and deploy/image/build.sh, work
// as installed: the tarball's binaries and plugins, the deb on this machine
// (installed, run as its service would run, removed and purged), and the
// image pulled from a registry on loopback and run from its exported
// filesystem as its own user.
//
// It installs a package on this machine, so it runs only when asked:
// RELEASE_TEST=1, as `go tool task release:test` (CI) sets it.
func TestInstalledArtifacts(t *testing.T) {
	if os.Getenv("RELEASE_TEST") != "1" {
		t.Skip("installs a package on this machine: run it with go tool task release:test (as root; CI does)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it installs a package with dpkg and runs the image's files in a chroot")
	}
	goreleaser := tool(t, "goreleaser")
	crane := tool(t, "crane")
	testbin.Program(t, "dpkg", "dpkg")
	testbin.Program(t, "tar", "tar")

	dist, version := snapshot(t, goreleaser)
	t.Run("checksums", func(t *testing.T) { checkChecksums(t, dist, version) })
	t.Run("tarball", func(t *testing.T) { checkTarball(t, dist, version) })
	t.Run("deb", func(t *testing.T) { checkDeb(t, dist, version) })
	t.Run("image", func(t *testing.T) { checkImage(t, crane, dist, version) })
}

// snapshot builds the release with goreleaser --snapshot into a temporary
// dist, for this machine's architecture only (the release builds amd64 and
// arm64; one is enough to test and takes half the time), and returns the
// dist directory and the version.
func snapshot(t *testing.T, goreleaser string) (string, string) {
	t.Helper()
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const all = "goarch: [amd64, arm64]"
	if n := strings.Count(string(b), all); n != 1 {
		t.Fatalf(".goreleaser.yaml has %q %d times, want once (in the server's build, which the plugins copy)", all, n)
	}
	dir := t.TempDir()
	dist := filepath.Join(dir, "dist")
	cfg := strings.Replace(string(b), all, "goarch: ["+goarch+"]", 1) + "\ndist: " + dist + "\n"
	path := filepath.Join(dir, "goreleaser.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	run(t, root, nil, goreleaser, "release", "--snapshot", "--clean", "--config", path)
	t.Logf("goreleaser --snapshot (linux/%s): %s", goarch, time.Since(start).Round(time.Second))

	var meta struct{ Version string }
	b, err = os.ReadFile(filepath.Join(dist, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil || meta.Version == "" {
		t.Fatalf("dist/metadata.json: %v %s", err, b)
	}
	return dist, meta.Version
}

// one returns the single file matching pattern in dir.
func one(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) != 1 {
		t.Fatalf("%s in %s: %v %v", pattern, dir, m, err)
	}
	return m[0]
}

// The checksums file covers the tarball and both packages, and is right.
func checkChecksums(t *testing.T, dist, version string) {
	sums := map[string]string{}
	f, err := os.Open(filepath.Join(dist, "agent-server_"+version+"_checksums.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sum, name, ok := strings.Cut(sc.Text(), "  "); ok {
			sums[name] = sum
		}
	}
	rpmArch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[goarch]
	for _, pattern := range []string{"agent-server_*_linux_" + goarch + ".tar.gz", "agent-server_*_" + goarch + ".deb", "agent-server-*." + rpmArch + ".rpm"} {
		path := one(t, dist, pattern)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256(b)
		if got, want := sums[filepath.Base(path)], hex.EncodeToString(d[:]); got != want {
			t.Errorf("checksum of %s = %q, want %s", filepath.Base(path), got, want)
		}
	}
}

// The tarball holds the server, every built-in plugin, and a config that
// finds them beside it; the binaries are static.
func checkTarball(t *testing.T, dist, version string) {
	dir := t.TempDir()
	run(t, dir, nil, "tar", "-xzf", one(t, dist, "agent-server_*_linux_"+goarch+".tar.gz"))
	top := one(t, dir, "agent-server_*")
	for _, f := range []string{"agent-server", "config.yaml", "README.md"} {
		if _, err := os.Stat(filepath.Join(top, f)); err != nil {
			t.Error(err)
		}
	}
	checkBinaries(t, filepath.Join(top, "agent-server"), filepath.Join(top, "plugins"))

	if got := run(t, top, nil, "./agent-server", "version"); got != "agent-server "+version+"\n" {
		t.Errorf("version = %q, want agent-server %s", got, version)
	}
	// plugins list starts each plugin of the default chains, found through
	// ./config.yaml's plugins.dir, and prints its version and path.
	out := run(t, top, nil, "./agent-server", "plugins", "list")
	for _, p := range []string{"query", "header", "bearer", "subprotocol", "first_message"} {
		if !strings.Contains(out, filepath.Join(top, "plugins", "auth-"+p)) {
			t.Errorf("plugins list does not show %s from the tarball:\n%s", p, out)
		}
	}
}

// checkBinaries checks the server and every built-in plugin are there,
// executable and statically linked (no ELF interpreter), as the image needs.
func checkBinaries(t *testing.T, server, pluginDir string) {
	t.Helper()
	bins := []string{server}
	for _, p := range builtinPlugins(t) {
		bins = append(bins, filepath.Join(pluginDir, "auth-"+p))
	}
	for _, b := range bins {
		st, err := os.Stat(b)
		if err != nil {
			t.Error(err)
			continue
		}
		if st.Mode()&0o111 != 0o111 {
			t.Errorf("%s mode %s, want executable by all", b, st.Mode())
		}
		f, err := elf.Open(b)
		if err != nil {
			t.Errorf("%s: %v", b, err)
			continue
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked (has an ELF interpreter); want CGO_ENABLED=0", b)
			}
		}
		f.Close()
	}
}

// The deb installs the layout, the user and a unit systemd accepts; the
// server runs from it as the unit runs it and serves a client; removing and
// purging the package take it all away.
func checkDeb(t *testing.T, dist, version string) {
	deb := one(t, dist, "agent-server_*_"+goarch+".deb")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "agent-server").CombinedOutput(); err == nil && !strings.Contains(string(out), "not-installed") {
		t.Fatalf("agent-server is already installed here (%s); this test will not touch it: dpkg --purge agent-server first", out)
	}
	t.Cleanup(func() { _ = exec.Command("dpkg", "--purge", "agent-server").Run() })
	run(t, "/", nil, "dpkg", "-i", deb)

	// The layout.
	if target, err := os.Readlink("/usr/bin/agent-server"); err != nil || target != "/usr/lib/agent-server/agent-server" {
		t.Errorf("/usr/bin/agent-server -> %q (%v), want /usr/lib/agent-server/agent-server", target, err)
	}
	checkBinaries(t, "/usr/bin/agent-server", "/usr/lib/agent-server/plugins")
	u, err := user.Lookup("agent-server")
	if err != nil {
		t.Fatalf("no agent-server user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if g, err := user.LookupGroupId(u.Gid); err != nil || g.Name != "agent-server" {
		t.Errorf("agent-server's group = %v (%v), want agent-server", g, err)
	}
	if uid == 0 || uid >= 1000 {
		t.Errorf("agent-server uid = %d, want a system user (1..999)", uid)
	}
	checkOwner(t, "/etc/agent-server/config.yaml", 0, gid, 0o640)
	checkOwner(t, "/var/lib/agent-server", uid, gid, fs.ModeDir|0o750)
	if out := run(t, "/", nil, "dpkg-query", "-W", "-f=${Conffiles}", "agent-server"); !strings.Contains(out, "/etc/agent-server/config.yaml") {
		t.Errorf("conffiles = %q, want /etc/agent-server/config.yaml", out)
	}

	// systemd accepts the unit, now that its binary exists.
	const unitPath = "/usr/lib/systemd/system/agent-server.service"
	t.Run("systemd-analyze verify", func(t *testing.T) {
		analyze := testbin.Program(t, "systemd", "systemd-analyze")
		if out := run(t, "/", nil, analyze, "verify", unitPath); strings.Contains(out, "agent-server") {
			t.Errorf("systemd-analyze verify %s:\n%s", unitPath, out)
		}
	})

	// Run the unit's commands as its user (there is no systemd to do it
	// here), with a key from the environment as EnvironmentFile would give.
	unit := readUnit(t, unitPath)
	if unit["User"] != "agent-server" || unit["Group"] != "agent-server" {
		t.Fatalf("unit runs as %s:%s, want agent-server", unit["User"], unit["Group"])
	}
	as := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	env := []string{"PATH=/usr/bin:/bin", "SESSION_API_KEY=" + key}
	pre := strings.Fields(unit["ExecStartPre"])
	check := exec.Command(pre[0], pre[1:]...)
	check.Dir, check.Env, check.SysProcAttr = "/", env, as
	if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "config is valid") {
		t.Fatalf("ExecStartPre %v: %v\n%s", pre, err, out)
	}
	argv := strings.Fields(unit["ExecStart"])
	cmd := exec.Command(argv[0], argv[1:]...)
	// Only loopback, on free ports: the packaged 127.0.0.1:8000 and 8001 may be in use.
	cmd.Dir, cmd.Env, cmd.SysProcAttr = "/", append(env, "AGENT_SERVER_SERVER__ADDR=127.0.0.1:0", "AGENT_SERVER_ADMIN__ADDR=127.0.0.1:0"), as
	s := start(t, cmd)
	s.converse(t, key)
	s.stop(t)
	if got := run(t, "/", nil, "/usr/bin/agent-server", "version"); got != "agent-server "+version+"\n" {
		t.Errorf("version = %q, want agent-server %s", got, version)
	}
	checkOwner(t, "/var/lib/agent-server/agent-server.db", uid, gid, 0)

	// Remove: the program goes, the config stays until a purge.
	run(t, "/", nil, "dpkg", "-r", "agent-server")
	for _, p := range []string{"/usr/bin/agent-server", "/usr/lib/agent-server", unitPath} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is still there after dpkg -r", p)
		}
	}
	if _, err := os.Stat("/etc/agent-server/config.yaml"); err != nil {
		t.Errorf("dpkg -r removed the config: %v", err)
	}
	run(t, "/", nil, "dpkg", "--purge", "agent-server")
	for _, p := range []string{"/etc/agent-server", "/var/lib/agent-server"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is still there after dpkg --purge", p)
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "agent-server").CombinedOutput(); err == nil && !strings.Contains(string(out), "not-installed") {
		t.Errorf("after purge, dpkg-query says %q", out)
	}
}

// checkOwner checks path's owner, group and mode (mode 0: any).
func checkOwner(t *testing.T, path string, uid, gid int, mode fs.FileMode) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Error(err)
		return
	}
	sys := st.Sys().(*syscall.Stat_t)
	if int(sys.Uid) != uid || int(sys.Gid) != gid {
		t.Errorf("%s owned by %d:%d, want %d:%d", path, sys.Uid, sys.Gid, uid, gid)
	}
	if mode != 0 && st.Mode()&(fs.ModeType|fs.ModePerm|fs.ModeSticky) != mode {
		t.Errorf("%s mode %s, want %s", path, st.Mode(), mode)
	}
}
