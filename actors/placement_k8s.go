package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/cluster/clusterproviders/k8s"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// namespaceFile is where a pod reads its namespace.
const namespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// clearStaleLabels removes protoactor's cluster labels from this pod before
// the kubernetes provider registers it. protoactor copies a pod's existing
// labels over the ones it sets, so a container restarted in place (the pod
// and its labels stay) would advertise the member ID of its previous run,
// which the other members dropped for good, and never rejoin. It needs the
// same RBAC as the provider: get and patch on pods.
func clearStaleLabels() error {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("%w (it runs only inside a pod)", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ns, err := os.ReadFile(namespaceFile)
	if err != nil {
		return fmt.Errorf("read the pod's namespace: %w", err)
	}
	name, err := os.Hostname()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods := cs.CoreV1().Pods(strings.TrimSpace(string(ns)))
	pod, err := pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s: %w", name, err)
	}
	stale := map[string]any{}
	for k := range pod.Labels {
		if strings.HasPrefix(k, k8s.LabelPrefix) {
			stale[k] = nil // a merge patch removes a key set to null
		}
	}
	if len(stale) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": stale}})
	if err != nil {
		return err
	}
	if _, err := pods.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("remove stale cluster labels from pod %s: %w", name, err)
	}
	return nil
}
