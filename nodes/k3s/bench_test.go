package k3s_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s"
)

// benchLab is one server and n-1 agents.
func benchLab(b *testing.B, n int) *testlab.Lab {
	spec := testlab.Spec{Cluster: fmt.Sprintf("bench%d", n), Nodes: []testlab.Node{{Name: "server", Role: "server"}}}
	for i := 1; i < n; i++ {
		spec.Nodes = append(spec.Nodes, testlab.Node{Name: fmt.Sprintf("agent-%02d", i), Role: "agent"})
	}
	return testlab.New(b, spec)
}

// benchOptions are the lab's inventory and the options the benchmarks run
// rack with: 16 nodes at a time, k3s binaries in rack's default cache.
func benchOptions(b *testing.B, lab *testlab.Lab) (*inventory.Inventory, k3s.Options) {
	b.Helper()
	inv := lab.LoadInventory(b)
	o, err := k3s.NewOptions(inv)
	if err != nil {
		b.Fatal(err)
	}
	o.Resolver = nodes.Resolver{Home: lab.Dir}
	o.Kubeconfig = lab.Kubeconfig
	o.FanOut = nodes.FanOutOptions{Concurrency: 16}
	return inv, o
}

// benchUp runs plan + apply once and returns its wall time and bytes sent.
func benchUp(b *testing.B, lab *testlab.Lab) (time.Duration, int64, int) {
	inv, o := benchOptions(b, lab)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	plan, err := k3s.BuildPlan(ctx, inv, o)
	if err != nil {
		b.Fatal(err)
	}
	out, err := k3s.Apply(ctx, plan, o)
	if err != nil {
		b.Fatal(err)
	}
	return time.Since(start), out.BytesSent, plan.Changes()
}

// BenchmarkUp16vs1 measures `rack up --nodes-only` on 16 test hosts against
// 1, side by side in one run (goal: at most 1.5×), then a converged re-run on
// the 16 (goal: at most 3 s and 0 bytes).
func BenchmarkUp16vs1(b *testing.B) {
	one := benchLab(b, 1)
	sixteen := benchLab(b, 16)
	b.ResetTimer()
	var t1, t16, rerun time.Duration
	var rerunBytes int64
	for i := 0; i < b.N; i++ {
		d1, _, _ := benchUp(b, one)
		d16, _, _ := benchUp(b, sixteen)
		d, sent, changes := benchUp(b, sixteen)
		if changes != 0 {
			b.Fatalf("converged re-run planned %d changes", changes)
		}
		t1, t16, rerun, rerunBytes = t1+d1, t16+d16, rerun+d, rerunBytes+sent
		b.Logf("round %d: 1 host %s, 16 hosts %s, converged re-run %s (%d bytes)", i, d1, d16, d, sent)
	}
	b.ReportMetric(t16.Seconds()/t1.Seconds(), "up_16_vs_1")
	b.ReportMetric(rerun.Seconds()/float64(b.N), "rerun_16_seconds")
	b.ReportMetric(float64(rerunBytes)/float64(b.N), "rerun_16_bytes")
}
