package inventory

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// bigInventory renders a rack of n nodes with storage, pools and apps, the
// shape a large homelab (or a small lab at work) would write.
func bigInventory(n int) []byte {
	var b strings.Builder
	b.WriteString("cluster:\n  name: big\n  k3s: {version: v1.33.5+k3s1}\nssh: {user: pi, hostKeyPolicy: strict}\nnodes:\n")
	for i := 0; i < n; i++ {
		role := "agent"
		if i < 3 {
			role = "server"
		}
		fmt.Fprintf(&b, "  - name: node-%03d\n    address: 10.1.%d.%d\n    role: %s\n    arch: arm64\n", i, i/250, i%250+1, role)
		fmt.Fprintf(&b, "    labels: {topology.kubernetes.io/zone: shelf-%d}\n", i%8)
		fmt.Fprintf(&b, "    storage:\n      longhorn: /var/lib/longhorn\n      local: [{name: pv-%03d, path: /storage, capacity: 60Gi}]\n", i)
	}
	b.WriteString("addons:\n  metallb:\n    pools:\n")
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&b, "      - {name: pool-%d, addresses: [10.9.%d.0/25, 10.9.%d.128-10.9.%d.200]}\n", i, i, i, i)
	}
	b.WriteString("  longhorn: {replicas: 3}\n  localPV: {}\n  traefik: {}\napps:\n")
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, "  - {name: app-%d, image: app:1.%d, port: 8080, expose: {host: app-%d.home.arpa}, strategy: {type: canary, steps: [5, 25, 50, 100]}}\n", i, i, i)
	}
	return []byte(b.String())
}

func TestBigInventoryIsValid(t *testing.T) {
	inv, ps := Parse("big.yaml", bigInventory(200), Options{})
	if len(ps) != 0 || len(inv.Nodes) != 200 {
		t.Fatalf("%d nodes, problems:\n%s", len(inv.Nodes), render(ps))
	}
}

// BenchmarkValidate200Nodes: loading and validating a 200-node inventory; goal under 100 ms.
func BenchmarkValidate200Nodes(b *testing.B) {
	data := bigInventory(200)
	b.SetBytes(int64(len(data)))
	start := time.Now()
	for b.Loop() {
		if _, ps := Parse("big.yaml", data, Options{}); ps.HasErrors() {
			b.Fatal(ps)
		}
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "validate_200_ms")
}
