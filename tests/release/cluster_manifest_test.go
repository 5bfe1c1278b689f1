package release

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	yamlv3 "gopkg.in/yaml.v3"

	"github.com/agent-server/agent-server/core/config"
)

// k8sObject is the part of a Kubernetes object the manifest's checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Rules []struct {
		APIGroups []string `yaml:"apiGroups"`
		Resources []string `yaml:"resources"`
		Verbs     []string `yaml:"verbs"`
	} `yaml:"rules"`
	Subjects []struct {
		Kind, Name string
	} `yaml:"subjects"`
	RoleRef struct {
		Kind, Name string
	} `yaml:"roleRef"`
	Spec struct {
		ClusterIP string      `yaml:"clusterIP"`
		Selector  yamlv3.Node `yaml:"selector"`
		Template  struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				ServiceAccountName string `yaml:"serviceAccountName"`
				Containers         []struct {
					Ports []struct {
						Name string `yaml:"name"`
					} `yaml:"ports"`
					Env []struct {
						Name      string `yaml:"name"`
						Value     string `yaml:"value"`
						ValueFrom *struct {
							FieldRef *struct {
								FieldPath string `yaml:"fieldPath"`
							} `yaml:"fieldRef"`
							SecretKeyRef *struct{ Key string } `yaml:"secretKeyRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
					ReadinessProbe struct {
						HTTPGet struct{ Path, Port string } `yaml:"httpGet"`
					} `yaml:"readinessProbe"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// The Kubernetes manifest in docs/cluster.md cannot be applied here (no
// cluster), so its shape is checked: the RBAC the kubernetes provider needs
// (get, list, watch and patch on pods) bound to the pods' service account,
// a headless Service over the pods, readiness on /ready, and an
// environment that the image's config.yaml plus those variables turn into a
// valid cluster configuration with the kubernetes provider.
func TestClusterManifest(t *testing.T) {
	objs := manifestObjects(t, filepath.Join(repoRoot(t), "docs", "cluster.md"))
	byKind := map[string][]k8sObject{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	for _, k := range []string{"ServiceAccount", "Role", "RoleBinding", "Service", "Deployment"} {
		if len(byKind[k]) == 0 {
			t.Fatalf("the manifest has no %s", k)
		}
	}
	role, binding, deploy := byKind["Role"][0], byKind["RoleBinding"][0], byKind["Deployment"][0]
	var verbs []string
	for _, r := range role.Rules {
		if slices.Contains(r.APIGroups, "") && slices.Contains(r.Resources, "pods") {
			verbs = append(verbs, r.Verbs...)
		}
	}
	for _, v := range []string{"get", "list", "watch", "patch"} {
		if !slices.Contains(verbs, v) {
			t.Errorf("the Role does not allow %q on pods (it allows %v)", v, verbs)
		}
	}
	pod := deploy.Spec.Template.Spec
	sa := pod.ServiceAccountName
	if binding.RoleRef.Name != role.Metadata.Name || len(binding.Subjects) != 1 || binding.Subjects[0].Name != sa || byKind["ServiceAccount"][0].Metadata.Name != sa {
		t.Errorf("the RoleBinding binds %+v to %q; want the Role %q to the pods' service account %q", binding.Subjects, binding.RoleRef.Name, role.Metadata.Name, sa)
	}
	headless := false
	for _, s := range byKind["Service"] {
		var sel map[string]string
		if err := s.Spec.Selector.Decode(&sel); err != nil {
			t.Fatalf("Service %s's selector: %v", s.Metadata.Name, err)
		}
		for k, v := range sel {
			if deploy.Spec.Template.Metadata.Labels[k] != v {
				t.Errorf("Service %s selects %s=%s, which the pods do not carry", s.Metadata.Name, k, v)
			}
		}
		headless = headless || s.Spec.ClusterIP == "None"
	}
	if !headless {
		t.Error("no headless Service (clusterIP: None) for the nodes")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.ReadinessProbe.HTTPGet.Path != "/ready" {
		t.Errorf("readinessProbe on %q, want /ready (503 until the node joined)", c.ReadinessProbe.HTTPGet.Path)
	}

	// The environment, as the kubelet would expand it.
	vars := map[string]string{}
	var environ []string
	expand := regexp.MustCompile(`\$\(([A-Z_0-9]+)\)`)
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
			v = "10.1.2.3"
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && strings.Contains(e.Name, "DSN"):
			v = "postgres://agent@db:5432/agent"
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			v = "a-secret-from-the-secret"
		}
		v = expand.ReplaceAllStringFunc(v, func(m string) string { return vars[m[2:len(m)-1]] })
		vars[e.Name] = v
		environ = append(environ, e.Name+"="+v)
	}
	cfg, err := config.Load(config.Source{File: filepath.Join(repoRoot(t), "deploy", "image", "config.yaml"), Environ: environ})
	if err != nil {
		t.Fatalf("the image's config.yaml with the manifest's environment does not load: %v", err)
	}
	cl := cfg.Cluster
	if !cl.Enabled || cl.Provider != config.ProviderKubernetes || cl.Advertise != "10.1.2.3:7420" || cfg.Storage.Driver != "postgres" || cl.TLS.CAFile == "" {
		t.Errorf("cluster config = enabled %v, provider %q, advertise %q, storage %q, tls ca %q; want a kubernetes member at the pod's IP on postgres with mTLS",
			cl.Enabled, cl.Provider, cl.Advertise, cfg.Storage.Driver, cl.TLS.CAFile)
	}
	_, port, _ := strings.Cut(cl.Bind, ":")
	hasPort := false
	for _, p := range c.Ports {
		hasPort = hasPort || p.Name == "cluster"
	}
	if port != "7420" || !hasPort {
		t.Errorf("cluster.bind %q and the container's ports: want the cluster port 7420 declared", cl.Bind)
	}
}

// manifestObjects decodes the YAML block of the Kubernetes section of a
// Markdown file.
func manifestObjects(t *testing.T, path string) []k8sObject {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := bytes.Cut(doc, []byte("\n## Kubernetes\n"))
	if !ok {
		t.Fatalf("%s has no Kubernetes section", path)
	}
	_, block, ok := bytes.Cut(section, []byte("```yaml\n"))
	block, _, ok2 := bytes.Cut(block, []byte("```"))
	if !ok || !ok2 {
		t.Fatalf("%s's Kubernetes section has no yaml block", path)
	}
	dec := yamlv3.NewDecoder(bytes.NewReader(block))
	var out []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s's manifest: %v", path, err)
		}
		out = append(out, o)
	}
}
