package release

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// registry starts `crane registry serve` on a free loopback port, as its
// own process, and returns its host:port. It stops with the test.
func registry(t *testing.T, crane string) string {
	t.Helper()
	cmd := exec.Command(crane, "registry", "serve", "--address", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	port := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`serving on port (\d+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				port <- m[1]
			}
		}
	}()
	select {
	case p := <-port:
		return "127.0.0.1:" + p
	case <-time.After(30 * time.Second):
		t.Fatal("crane registry serve did not start within 30s")
		return ""
	}
}

// imageConfig is the part of an OCI image config the test reads.
type imageConfig struct {
	Architecture string
	Config       struct {
		Entrypoint []string
		Cmd        []string
		User       string
		Env        []string
		WorkingDir string
	}
}

// The image, built offline on an empty base and pushed to a registry on
// loopback, holds what the server needs (static binaries, plugins, a CA
// bundle, /tmp, a data directory its user owns); pulled back and exported,
// its entrypoint runs from that filesystem as the image's user and serves a
// client.
func checkImage(t *testing.T, crane, dist, version string) {
	ref := registry(t, crane) + "/agent-server:" + strings.NewReplacer("+", "-").Replace(version)
	run(t, repoRoot(t), []string{"CRANE=" + crane}, filepath.Join(repoRoot(t), "deploy/image/build.sh"), dist, ref)

	var index struct {
		Manifests []struct {
			Platform struct{ OS, Architecture string }
		}
	}
	if err := json.Unmarshal([]byte(run(t, "/", nil, crane, "manifest", ref)), &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Platform.OS != "linux" || index.Manifests[0].Platform.Architecture != goarch {
		t.Errorf("index %s = %+v, want one linux/%s image (this snapshot's one architecture)", ref, index.Manifests, goarch)
	}

	platform := "linux/" + goarch
	var img imageConfig
	if err := json.Unmarshal([]byte(run(t, "/", nil, crane, "config", "--platform", platform, ref)), &img); err != nil {
		t.Fatal(err)
	}
	ep := img.Config.Entrypoint
	if len(ep) < 2 || ep[1] != "serve" {
		t.Fatalf("entrypoint = %q, want agent-server serve ...", ep)
	}
	uid, gid := parseUser(t, img.Config.User)
	if uid == 0 || gid == 0 {
		t.Fatalf("image user = %q, want a non-root uid:gid", img.Config.User)
	}

	// Pull it back as a container runtime would, and lay out its filesystem.
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, dir, nil, crane, "export", "--platform", platform, ref, filepath.Join(dir, "fs.tar"))
	run(t, dir, nil, "tar", "-xpf", filepath.Join(dir, "fs.tar"), "--numeric-owner", "-C", rootfs)

	checkBinaries(t, filepath.Join(rootfs, ep[0]), filepath.Join(rootfs, "usr/lib/agent-server/plugins"))
	checkOwner(t, filepath.Join(rootfs, "tmp"), 0, 0, fs.ModeDir|fs.ModeSticky|0o777)
	checkOwner(t, filepath.Join(rootfs, "var/lib/agent-server"), uid, gid, fs.ModeDir|0o750)
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt")); err != nil || strings.Count(string(b), "BEGIN CERTIFICATE") < 10 {
		t.Errorf("CA bundle: %v, %d certificates", err, strings.Count(string(b), "BEGIN CERTIFICATE"))
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc/passwd")); err != nil || !strings.Contains(string(b), fmt.Sprintf(":%d:%d:", uid, gid)) {
		t.Errorf("/etc/passwd has no entry for %d:%d: %v\n%s", uid, gid, err, b)
	}

	// Run the entrypoint in that filesystem as the image's user, as
	// `docker run -e SESSION_API_KEY=...` would.
	runImage(t, rootfs, img, uid, gid, version, "SESSION_API_KEY="+key)

	// And as the Helm chart runs it: its ConfigMap's config.yaml mounted
	// over the image's, its Secret's keys in OH_SESSION_API_KEYS.
	t.Run("as the chart runs it", func(t *testing.T) {
		objs := renderChart(t, tool(t, "helm"), "--set", "auth.keys[0]="+key)
		cfg := str(objs["ConfigMap"], "data", "config.yaml")
		if err := os.WriteFile(filepath.Join(rootfs, "etc/agent-server/config.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		keys, err := json.Marshal(secretKeys(t, objs["Secret"]))
		if err != nil {
			t.Fatal(err)
		}
		runImage(t, rootfs, img, uid, gid, version, "OH_SESSION_API_KEYS="+string(keys))
	})
}

// runImage runs the image's entrypoint in rootfs as uid:gid, with the
// image's environment plus env, has a client converse with it, and stops
// it. Only the listen address changes: the image's 0.0.0.0:8000 is right
// inside a container's own network, but here the test talks to loopback
// only.
func runImage(t *testing.T, rootfs string, img imageConfig, uid, gid int, version string, env ...string) {
	t.Helper()
	ep := img.Config.Entrypoint
	cmd := &exec.Cmd{
		Path: ep[0],
		Args: slices.Concat(ep, img.Config.Cmd, []string{"--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}),
		Env:  slices.Concat(img.Config.Env, env),
		Dir:  img.Config.WorkingDir,
		SysProcAttr: &syscall.SysProcAttr{
			Chroot:     rootfs,
			Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)},
		},
	}
	s := start(t, cmd)
	if !strings.Contains(s.Log(), `"version":"`+version+`"`) {
		t.Errorf("the image's server does not log version %s:\n%s", version, s.Log())
	}
	s.converse(t, key)
	s.stop(t)
	checkOwner(t, filepath.Join(rootfs, "var/lib/agent-server/agent-server.db"), uid, gid, 0)
}

// parseUser reads an image's numeric "uid:gid" user.
func parseUser(t *testing.T, s string) (int, int) {
	t.Helper()
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("image user = %q, want numeric uid:gid (Kubernetes' runAsNonRoot checks it)", s)
	}
	return uid, gid
}
