package release

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knadh/koanf/parsers/yaml"

	"github.com/agent-server/agent-server/core/config"
)

// chart is the Helm chart's directory, relative to the repository root.
const chart = "deploy/helm/agent-server"

// The chart lints, and renders, for its default values, each file in its
// ci/ directory and an existing Secret, one node that agent-server can run
// as: the config it mounts loads (and keeps the image's layout), the keys
// reach the server from a Secret, the probes hit /alive and /ready, the
// Service and PodDisruptionBudget select the pod, and the read-only root
// filesystem leaves /tmp and the data directory writable.
func TestHelmChart(t *testing.T) {
	helm := tool(t, "helm")
	root := repoRoot(t)
	tests := []helmCase{
		{"default values", nil, func(t *testing.T, objs map[string]object, cfg config.Config) {
			if keys := secretKeys(t, objs["Secret"]); len(keys) != 1 || len(keys[0]) < 32 {
				t.Errorf("generated keys = %q, want one random key", keys)
			}
			if objs["PersistentVolumeClaim"] != nil {
				t.Error("a PersistentVolumeClaim without persistence.enabled")
			}
		}},
		{"ci/one-node-values.yaml", []string{"-f", chart + "/ci/one-node-values.yaml"}, func(t *testing.T, objs map[string]object, cfg config.Config) {
			want := "sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
			if keys := secretKeys(t, objs["Secret"]); !slices.Equal(keys, []string{want}) {
				t.Errorf("keys = %q, want [%s]", keys, want)
			}
			if cfg.Limits.SubscribersPerConversation != 100 || !slices.Equal(cfg.Auth.Chains.Events, []string{"header", "bearer", "subprotocol"}) {
				t.Errorf("config overrides lost: subscribers %d, events chain %v", cfg.Limits.SubscribersPerConversation, cfg.Auth.Chains.Events)
			}
			if got := str(objs["PersistentVolumeClaim"], "spec", "resources", "requests", "storage"); got != "5Gi" {
				t.Errorf("volume claim size = %s, want 5Gi", got)
			}
			if got := str(named(at(objs["Deployment"], "spec", "template"), "agent-server", "spec", "containers"), "image"); got != "registry.example/agent-server:1.2.3" {
				t.Errorf("image = %s", got)
			}
		}},
		{"existing secret", []string{"--set", "auth.existingSecret=my-keys,auth.existingSecretKey=keys"}, func(t *testing.T, objs map[string]object, cfg config.Config) {
			if objs["Secret"] != nil {
				t.Error("a Secret rendered though auth.existingSecret is set")
			}
			c := named(at(objs["Deployment"], "spec", "template"), "agent-server", "spec", "containers")
			ref := at(named(c, "OH_SESSION_API_KEYS", "env"), "valueFrom", "secretKeyRef")
			if str(ref, "name") != "my-keys" || str(ref, "key") != "keys" {
				t.Errorf("keys from %v, want Secret my-keys, key keys", ref)
			}
		}},
	}
	// Every values file CI renders has a case here.
	ciValues, err := filepath.Glob(filepath.Join(root, chart, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ciValues {
		if !slices.ContainsFunc(tests, func(tc helmCase) bool { return tc.name == "ci/"+filepath.Base(f) }) {
			t.Errorf("%s has no case in TestHelmChart", f)
		}
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run(t, root, nil, helm, append([]string{"lint", "--strict", chart}, tt.args...)...)
			objs := renderChart(t, helm, tt.args...)
			cfg := checkOneNode(t, objs)
			tt.check(t, objs, cfg)
		})
	}
}

// helmCase is one set of values the chart is rendered with, and what that
// rendering must hold beyond checkOneNode.
type helmCase struct {
	name  string
	args  []string
	check func(t *testing.T, objs map[string]object, cfg config.Config)
}

// secretKeys decodes the keys of the chart's Secret (OH_SESSION_API_KEYS, a
// JSON list).
func secretKeys(t *testing.T, sec object) []string {
	t.Helper()
	if sec == nil {
		t.Fatal("no Secret rendered")
	}
	raw, err := base64.StdEncoding.DecodeString(str(sec, "data", "OH_SESSION_API_KEYS"))
	if err != nil {
		t.Fatalf("Secret OH_SESSION_API_KEYS: %v", err)
	}
	var keys []string
	if err := json.Unmarshal(raw, &keys); err != nil {
		t.Fatalf("Secret OH_SESSION_API_KEYS = %s, want a JSON list: %v", raw, err)
	}
	return keys
}

// renderChart renders the chart with helm template and returns its objects
// by kind.
func renderChart(t *testing.T, helm string, args ...string) map[string]object {
	t.Helper()
	out := run(t, repoRoot(t), nil, helm, append([]string{"template", "rel", chart, "--namespace", "ns"}, args...)...)
	return parseManifests(t, out)
}

// object is one rendered Kubernetes object.
type object = map[string]any

// parseManifests splits helm template's output into objects by kind.
func parseManifests(t *testing.T, out string) map[string]object {
	t.Helper()
	objs := map[string]object{}
	for _, doc := range strings.Split(out, "\n---\n") {
		m, err := yaml.Parser().Unmarshal([]byte(doc))
		if err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, doc)
		}
		kind, _ := m["kind"].(string)
		if kind == "" {
			continue
		}
		if _, dup := objs[kind]; dup {
			t.Fatalf("two objects of kind %s", kind)
		}
		objs[kind] = m
	}
	return objs
}

// at walks v along keys (map keys, or list indexes as ints).
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string { return fmt.Sprint(at(v, path...)) }

// named finds the element of the list at path whose "name" is name.
func named(v any, name string, path ...any) any {
	l, _ := at(v, path...).([]any)
	for _, e := range l {
		if str(e, "name") == name {
			return e
		}
	}
	return nil
}

// checkOneNode checks what every one-node rendering needs and returns the
// config it mounts.
func checkOneNode(t *testing.T, objs map[string]object) config.Config {
	t.Helper()
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceAccount"} {
		if objs[kind] == nil {
			t.Fatalf("no %s rendered", kind)
		}
	}
	dep := objs["Deployment"]
	pod := at(dep, "spec", "template")
	c := named(pod, "agent-server", "spec", "containers")
	if c == nil {
		t.Fatal("no agent-server container")
	}
	if n := str(dep, "spec", "replicas"); n != "1" {
		t.Errorf("replicas = %s, want 1 (one node)", n)
	}

	// The config it mounts loads, and keeps the image's layout.
	cm := objs["ConfigMap"]
	if got, want := str(named(pod, "config", "spec", "volumes"), "configMap", "name"), str(cm, "metadata", "name"); got != want {
		t.Errorf("config volume from ConfigMap %q, want %q", got, want)
	}
	if got := str(named(c, "config", "volumeMounts"), "mountPath"); got != "/etc/agent-server" {
		t.Errorf("config mounted at %q, want /etc/agent-server (the image's entrypoint reads config.yaml there)", got)
	}
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(str(cm, "data", "config.yaml")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Source{File: cfgFile, Environ: []string{}})
	if err != nil {
		t.Fatalf("the chart's config.yaml does not load: %v\n%s", err, str(cm, "data", "config.yaml"))
	}
	image, err := config.Load(config.Source{File: filepath.Join(repoRoot(t), "deploy/image/config.yaml"), Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Plugins.Dir != image.Plugins.Dir || cfg.Storage != image.Storage || cfg.Log != image.Log {
		t.Errorf("chart config plugins %q storage %+v log %+v, want the image's: %q %+v %+v", cfg.Plugins.Dir, cfg.Storage, cfg.Log, image.Plugins.Dir, image.Storage, image.Log)
	}

	// It listens on the container port that the probes and the Service use.
	port := named(c, "http", "ports")
	if want := "0.0.0.0:" + str(port, "containerPort"); cfg.Server.Addr != want {
		t.Errorf("server.addr = %q, want %q", cfg.Server.Addr, want)
	}
	// The admin listener (/metrics) listens on the port the pod declares
	// and its scrape annotations name.
	adminPort := str(named(c, "admin", "ports"), "containerPort")
	if want := "0.0.0.0:" + adminPort; cfg.Admin.Addr != want || image.Admin.Addr != "0.0.0.0:8001" {
		t.Errorf("admin.addr = %q (image %q), want %q: Prometheus scrapes from outside the container", cfg.Admin.Addr, image.Admin.Addr, want)
	}
	if got := str(pod, "metadata", "annotations", "prometheus.io/port"); got != adminPort {
		t.Errorf("prometheus.io/port = %q, want the admin port %s", got, adminPort)
	}
	for probe, path := range map[string]string{"livenessProbe": "/alive", "readinessProbe": "/ready"} {
		if got := str(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path = %q, want %q", probe, got, path)
		}
		if got := str(c, probe, "httpGet", "port"); got != "http" {
			t.Errorf("%s port = %q, want http", probe, got)
		}
	}
	svc := objs["Service"]
	if got := str(named(svc, "http", "spec", "ports"), "targetPort"); got != "http" {
		t.Errorf("Service targetPort = %q, want http", got)
	}
	podLabels, _ := at(pod, "metadata", "labels").(map[string]any)
	for what, sel := range map[string]any{
		"Deployment selector": at(dep, "spec", "selector", "matchLabels"),
		"Service selector":    at(svc, "spec", "selector"),
		"PDB selector":        at(objs["PodDisruptionBudget"], "spec", "selector", "matchLabels"),
	} {
		m, _ := sel.(map[string]any)
		if len(m) == 0 {
			t.Errorf("%s is empty", what)
		}
		for k, v := range m {
			if podLabels[k] != v {
				t.Errorf("%s %s=%v does not match the pod's labels %v", what, k, v, podLabels)
			}
		}
	}

	// The keys come from a Secret, the chart's or the operator's.
	ref := at(named(c, "OH_SESSION_API_KEYS", "env"), "valueFrom", "secretKeyRef")
	if sec := objs["Secret"]; sec != nil {
		if str(ref, "name") != str(sec, "metadata", "name") || str(ref, "key") != "OH_SESSION_API_KEYS" {
			t.Errorf("OH_SESSION_API_KEYS from %v, want the chart's Secret %s", ref, str(sec, "metadata", "name"))
		}
	} else if ref == nil {
		t.Error("no Secret rendered and none referenced")
	}

	// Non-root on a read-only root filesystem: /tmp (the plugins' sockets)
	// and the data directory are volumes.
	if str(pod, "spec", "securityContext", "runAsNonRoot") != "true" || str(c, "securityContext", "readOnlyRootFilesystem") != "true" {
		t.Error("want runAsNonRoot and readOnlyRootFilesystem")
	}
	mounts := map[string]bool{}
	for _, m := range at(c, "volumeMounts").([]any) {
		mounts[str(m, "mountPath")] = true
	}
	for _, dir := range []string{"/tmp", filepath.Dir(cfg.Storage.Path)} {
		if !mounts[dir] {
			t.Errorf("%s is not a volume; mounts: %v", dir, mounts)
		}
	}

	// A volume claim only with persistence, and then one pod at a time.
	data := named(pod, "data", "spec", "volumes")
	if claim := str(data, "persistentVolumeClaim", "claimName"); objs["PersistentVolumeClaim"] != nil {
		if want := str(objs["PersistentVolumeClaim"], "metadata", "name"); claim != want {
			t.Errorf("data volume claims %q, want %q", claim, want)
		}
		if got := str(dep, "spec", "strategy", "type"); got != "Recreate" {
			t.Errorf("strategy = %q with a volume, want Recreate (bolt takes one process)", got)
		}
	} else if at(data, "emptyDir") == nil {
		t.Errorf("data volume = %v, want an emptyDir without persistence", data)
	}
	return cfg
}
