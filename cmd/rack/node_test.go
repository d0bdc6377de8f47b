package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/apps/apptest"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/nodes/k3s"
	"github.com/homelab/rack/nodes/kube"
)

// webDeployment runs replicas of a pod labelled app=NAME, on node when set.
func webDeployment(name string, replicas int32, node string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	// A short grace period: kwok deletes an evicted pod when it ends.
	spec := corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1"}}, TerminationGracePeriodSeconds: ptrTo(int64(1))}
	if node != "" {
		spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}}}
}

func logsDaemonSet() *appsv1.DaemonSet {
	labels := map[string]string{"app": "logs"}
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "logs", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "logs", Image: "registry.example/logs:1"}}, TerminationGracePeriodSeconds: ptrTo(int64(1))}}}}
}

func ptrTo[T any](v T) *T { return &v }

func pdb(name string, minAvailable, maxUnavailable *intstr.IntOrString) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: minAvailable, MaxUnavailable: maxUnavailable,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}
}

func intOrStr(i int) *intstr.IntOrString { v := intstr.FromInt32(int32(i)); return &v }

// runningOn counts the Running, not deleted pods labelled app=app on node.
func runningOn(t *testing.T, cs kubernetes.Interface, app, node string) int {
	t.Helper()
	list, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range list.Items {
		if p.Spec.NodeName == node && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			n++
		}
	}
	return n
}

func getNode(t *testing.T, cs kubernetes.Interface, name string) *corev1.Node {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustCreate[T any](t *testing.T, create func(context.Context, T, metav1.CreateOptions) (T, error), obj T) {
	t.Helper()
	if _, err := create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestNodeDrainUncordonRemoveAdd drives rack node on a test rack of one
// server and two agents: a drain held by a PodDisruptionBudget waits,
// reports, times out with exit 1 and leaves the node cordoned; DaemonSet
// pods stay; a drain without the budget goes through; uncordon; then an
// agent is removed (Node gone, k3s uninstalled on the host) and added back.
func TestNodeDrainUncordonRemoveAdd(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := testlab.New(t, testlab.Spec{Cluster: "nodes", Nodes: []testlab.Node{
		{Name: "srv", Role: "server"}, {Name: "wrk-1", Role: "agent"}, {Name: "wrk-2", Role: "agent"},
	}})
	mustUp(t, lab)
	env, inv := lab.Env(), []string{"-i", lab.Inventory}
	cs := lab.Clientset()
	// Under load kwok's heartbeats come late and the node controller marks
	// pods not ready for good; budgets would then never allow a disruption.
	apptest.KeepReady(t, cs, "default")
	mustCreate(t, cs.AppsV1().DaemonSets("default").Create, logsDaemonSet())
	mustCreate(t, cs.AppsV1().Deployments("default").Create, webDeployment("web", 2, "wrk-1"))
	mustCreate(t, cs.PolicyV1().PodDisruptionBudgets("default").Create, pdb("web", intOrStr(2), nil))
	testenv.WaitFor(t, testenv.Within(t, time.Minute), "2 web pods and the logs pod Running on wrk-1, the budget at 0 disruptions", func() (bool, string) {
		b, err := cs.PolicyV1().PodDisruptionBudgets("default").Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		web, logs := runningOn(t, cs, "web", "wrk-1"), runningOn(t, cs, "logs", "wrk-1")
		return web == 2 && logs == 1 && b.Status.CurrentHealthy == 2 && b.Status.DisruptionsAllowed == 0,
			fmt.Sprintf("web %d, logs %d, budget %+v", web, logs, b.Status)
	})

	start := time.Now()
	out, errOut, code := rack(t, env, append(inv, "node", "drain", "wrk-1", "--timeout", "12s")...)
	took := time.Since(start)
	if code != exitFailed {
		t.Fatalf("drain against a blocking PDB: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"node wrk-1 cordoned", "evicting pod default/web-", "waiting on PDB web: 0 disruptions allowed", "node wrk-1 was not drained within 12s (--timeout)", "it stays cordoned"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("drain's output lacks %q:\n%s", want, errOut)
		}
	}
	if took > 45*time.Second {
		t.Errorf("drain with --timeout 12s took %s", took)
	}
	n := getNode(t, cs, "wrk-1")
	if !n.Spec.Unschedulable || n.Annotations[kube.AnnotationCordonedBy] != kube.CordonedByDrain {
		t.Fatalf("wrk-1 after the timed-out drain: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}
	if web := runningOn(t, cs, "web", "wrk-1"); web != 2 {
		t.Errorf("%d web pods left on wrk-1: the budget allowed no eviction", web)
	}

	// Without the budget the drain goes through; the DaemonSet pod stays.
	if err := cs.PolicyV1().PodDisruptionBudgets("default").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = rack(t, env, append(inv, "node", "drain", "wrk-1", "-o", "json")...)
	if code != exitOK || !strings.Contains(out, `"evicted"`) {
		t.Fatalf("drain: exit %d\n%s\n%s", code, out, errOut)
	}
	if web, logs := runningOn(t, cs, "web", "wrk-1"), runningOn(t, cs, "logs", "wrk-1"); web != 0 || logs != 1 {
		t.Errorf("after the drain: %d web pods and %d logs pods on wrk-1, want 0 and 1", web, logs)
	}
	out, errOut, code = rack(t, env, append(inv, "node", "uncordon", "wrk-1")...)
	if code != exitOK || !strings.Contains(out, "node wrk-1 uncordoned") {
		t.Fatalf("uncordon: exit %d\n%s\n%s", code, out, errOut)
	}
	if n := getNode(t, cs, "wrk-1"); n.Spec.Unschedulable || n.Annotations[kube.AnnotationCordonedBy] != "" {
		t.Errorf("wrk-1 after uncordon: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}
	testenv.WaitFor(t, testenv.Within(t, time.Minute), "the web pods back on wrk-1", func() (bool, string) {
		web := runningOn(t, cs, "web", "wrk-1")
		return web == 2, fmt.Sprintf("%d running", web)
	})
	_, errOut, code = rack(t, env, append(inv, "node", "drain", "nope")...)
	if code != exitFailed || !strings.Contains(errOut, "node nope is not in the cluster") {
		t.Errorf("drain of an unknown node: exit %d %s", code, errOut)
	}

	// Remove an agent: drained, its Node deleted, k3s gone from the host.
	out, errOut, code = rack(t, env, append(inv, "node", "remove", "wrk-2", "--yes")...)
	if code != exitOK || !strings.Contains(out, "node wrk-2 removed") {
		t.Fatalf("remove wrk-2: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"drain wrk-2", "stop and disable k3s-agent", "delete Node wrk-2", "remove /usr/local/bin/k3s"} {
		if !strings.Contains(out, want) {
			t.Errorf("the removal's plan lacks %q:\n%s", want, out)
		}
	}
	if _, err := cs.CoreV1().Nodes().Get(context.Background(), "wrk-2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Node wrk-2 after the removal: %v", err)
	}
	h := lab.Host("wrk-2")
	for _, p := range []string{k3s.BinaryPath, k3s.ConfigPath, "/etc/systemd/system/k3s-agent.service", "/etc/systemd/system/k3s-agent.service.env", "/var/lib/rancher/k3s"} {
		if ok, _ := h.FileExists(p); ok {
			t.Errorf("wrk-2: %s is still there after the removal", p)
		}
	}
	if out, _ := h.Exec(context.Background(), "systemctl is-active k3s-agent || true"); strings.TrimSpace(string(out)) == "active" {
		t.Error("k3s-agent still runs on wrk-2")
	}

	// And back.
	out, errOut, code = rack(t, env, append(inv, "node", "add", "wrk-2", "--nodes-only", "--yes")...)
	if code != exitOK || !strings.Contains(out, "node wrk-2 is Ready at "+lab.Spec.Version) {
		t.Fatalf("add wrk-2: exit %d\n%s\n%s", code, out, errOut)
	}
	if n := getNode(t, cs, "wrk-2"); !kube.NodeReady(n) || n.Status.NodeInfo.KubeletVersion != lab.Spec.Version {
		t.Errorf("wrk-2 after the add: ready=%v version=%s", kube.NodeReady(n), n.Status.NodeInfo.KubeletVersion)
	}
	if plan := planText(t, lab); !strings.Contains(plan, "no changes") {
		t.Errorf("not converged after the add:\n%s", plan)
	}
	_, errOut, code = rack(t, env, append(inv, "node", "add", "ghost", "--nodes-only", "--yes")...)
	if code != exitFailed || !strings.Contains(errOut, "node ghost is not in the inventory") {
		t.Errorf("add of a node the inventory lacks: exit %d %s", code, errOut)
	}
	// The last server is not removed without --force.
	_, errOut, code = rack(t, env, append(inv, "node", "remove", "srv", "--yes")...)
	if code != exitFailed || !strings.Contains(errOut, "srv is the cluster's last server") || !strings.Contains(errOut, "nothing was changed") {
		t.Errorf("removing the last server: exit %d %s", code, errOut)
	}
	if n := getNode(t, cs, "srv"); n.Spec.Unschedulable {
		t.Error("a refused removal cordoned srv")
	}
}

// threeServers is a test rack of three servers and an agent whose servers
// form a real etcd cluster.
func threeServers(t *testing.T) *testlab.Lab {
	t.Helper()
	return testlab.New(t, testlab.Spec{Cluster: "ha", User: "root", Nodes: []testlab.Node{
		{Name: "etcd-1", Role: "server"}, {Name: "etcd-2", Role: "server"}, {Name: "etcd-3", Role: "server"}, {Name: "worker", Role: "agent"},
	}})
}

// TestNodeRemoveServer removes a server of three: its etcd member goes (the
// member list read through etcd before and after), k3s is uninstalled, the
// cluster keeps answering; removing the first server is refused.
func TestNodeRemoveServer(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := threeServers(t)
	mustUp(t, lab)
	env, inv := lab.Env(), []string{"-i", lab.Inventory}
	ctx := context.Background()
	before, err := lab.EtcdMembers(ctx, "etcd-1")
	if err != nil || len(before) != 3 {
		t.Fatalf("etcd members before: %v %v", before, err)
	}
	_, errOut, code := rack(t, env, append(inv, "node", "remove", "etcd-1", "--yes")...)
	if code != exitFailed || !strings.Contains(errOut, "etcd-1 is the inventory's first server") {
		t.Fatalf("removing the first server: exit %d %s", code, errOut)
	}
	out, errOut, code := rack(t, env, append(inv, "node", "remove", "etcd-3", "--yes")...)
	if code != exitOK {
		t.Fatalf("remove etcd-3: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"delete Node etcd-3", "no longer an etcd member", "etcd keeps 2 members"} {
		if !strings.Contains(out, want) {
			t.Errorf("the removal's plan lacks %q:\n%s", want, out)
		}
	}
	after, err := lab.EtcdMembers(ctx, "etcd-1")
	if err != nil || len(after) != 2 || slices.ContainsFunc(after, func(m string) bool { return strings.HasPrefix(m, "etcd-3") }) {
		t.Fatalf("etcd members after: %v %v (before %v)", after, err, before)
	}
	if ok, _ := lab.Host("etcd-3").FileExists("/var/lib/rancher/k3s/server"); ok {
		t.Error("etcd-3's k3s data (its etcd) is still there")
	}
	if _, err := lab.Clientset().CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("the cluster stopped answering: %v", err)
	}
	// Two members left: removing another would leave one, which has its
	// quorum; removing it while the other is down would not.
	_, errOut, code = rack(t, env, append(inv, "node", "remove", "etcd-2")...)
	if code != exitUsage || !strings.Contains(errOut, "pass --yes") {
		t.Errorf("remove without --yes and without a terminal: exit %d %s", code, errOut)
	}
}
