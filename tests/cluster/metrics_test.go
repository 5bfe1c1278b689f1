package cluster

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// scrape reads the unlabelled samples of n's /metrics (admin listener).
func scrape(t *testing.T, n *node) map[string]float64 {
	t.Helper()
	url := n.AdminURL("/metrics")
	if url == "" {
		t.Fatalf("%s logged no admin listener", n.name)
	}
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", n.name, err)
	}
	defer res.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// checkClusterMetrics checks what every node's metrics say about the
// cluster: each sees members members, they own owned activations in all,
// and at least delivered events crossed nodes to relays.
func checkClusterMetrics(t *testing.T, c *cluster, members, owned, delivered int) {
	t.Helper()
	var gotOwned, gotDelivered float64
	for _, n := range c.nodes {
		m := scrape(t, n)
		if got := m["agent_server_cluster_members"]; got != float64(members) {
			t.Errorf("%s: agent_server_cluster_members = %v, want %d", n.name, got, members)
		}
		gotOwned += m["agent_server_cluster_conversations_owned"]
		gotDelivered += m["agent_server_cluster_remote_deliveries_total"]
	}
	if gotOwned != float64(owned) {
		t.Errorf("agent_server_cluster_conversations_owned sums to %v over the nodes, want %d", gotOwned, owned)
	}
	if gotDelivered < float64(delivered) {
		t.Errorf("agent_server_cluster_remote_deliveries_total sums to %v, want at least %d", gotDelivered, delivered)
	}
}
