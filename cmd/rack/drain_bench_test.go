package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/apps/apptest"
	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/nodes/kube"
)

// BenchmarkDrainVsKubectl drains the same node holding 30 pods (and a
// DaemonSet's) with rack node drain and with kubectl drain (built from the
// same Kubernetes modules as the test control plane), as processes, side by
// side in alternating order, and reports
// drain_vs_kubectl = median(rack) / median(kubectl) (goal <= 1.1).
func BenchmarkDrainVsKubectl(b *testing.B) {
	const pods, rounds = 30, 5
	lab := testlab.New(b, testlab.Spec{Cluster: "bench", Nodes: []testlab.Node{{Name: "srv", Role: "server"}, {Name: "wrk", Role: "agent"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bins, err := testcluster.FindBinaries(ctx, b.Logf)
	if err != nil {
		b.Fatal(err)
	}
	rackBin := buildRack(b)
	env := os.Environ()
	for k, v := range lab.Env() {
		env = append(env, k+"="+v)
	}
	runTimed := func(name string, args ...string) time.Duration {
		b.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = env
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
		}
		return d
	}
	runTimed(rackBin, "-i", lab.Inventory, "up", "--nodes-only", "--yes")
	cs := lab.Clientset()
	// Under load kwok's heartbeats come late and the node controller marks
	// pods not ready for good; budgets would then never allow a disruption.
	apptest.KeepReady(b, cs, "default")
	for _, create := range []func() error{
		func() error {
			_, err := cs.AppsV1().DaemonSets("default").Create(ctx, logsDaemonSet(), metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.AppsV1().Deployments("default").Create(ctx, webDeployment("bench", pods, "wrk"), metav1.CreateOptions{})
			return err
		},
	} {
		if err := create(); err != nil {
			b.Fatal(err)
		}
	}
	ready := func() {
		b.Helper()
		if err := kube.Uncordon(ctx, cs, "wrk"); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Minute)
		for {
			n, err := podsRunning(ctx, cs, "wrk")
			if err == nil && n == pods+1 {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d pods running on wrk (%v)", n, pods+1, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	drainers := map[string][]string{
		"rack":    {rackBin, "-i", lab.Inventory, "node", "drain", "wrk", "--timeout", "3m"},
		"kubectl": {bins.Kubectl, "--kubeconfig", lab.Kubeconfig, "--context", "bench", "drain", "wrk", "--ignore-daemonsets", "--timeout", "3m"},
	}
	times := map[string][]time.Duration{}
	b.ResetTimer()
	for i := 0; i < rounds; i++ {
		order := []string{"rack", "kubectl"}
		if i%2 == 1 {
			order = []string{"kubectl", "rack"}
		}
		for _, who := range order {
			ready()
			d := runTimed(drainers[who][0], drainers[who][1:]...)
			times[who] = append(times[who], d)
		}
	}
	b.StopTimer()
	r, k := median(times["rack"]), median(times["kubectl"])
	b.Logf("rack node drain %v (median of %v), kubectl drain %v (median of %v)", r, times["rack"], k, times["kubectl"])
	b.ReportMetric(float64(r)/float64(k), "drain_vs_kubectl")
}

func podsRunning(ctx context.Context, cs kubernetes.Interface, node string) (int, error) {
	list, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range list.Items {
		if p.Status.Phase == "Running" && p.DeletionTimestamp == nil {
			n++
		}
	}
	return n, nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// buildRack builds the rack binary for a benchmark (rackBinary is the
// tests' once-per-process build).
func buildRack(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "rack")
	build := exec.Command("go", "build", "-o", path, ".")
	build.Env = append(os.Environ(), goEnv...)
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v: %s", err, out)
	}
	return path
}
