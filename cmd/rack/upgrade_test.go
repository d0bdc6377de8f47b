package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/homelab/rack/apps/apptest"
	"github.com/homelab/rack/internal/fakek3s"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/nodes/k3s/catalog"
	"github.com/homelab/rack/nodes/k3s/upgrade"
	"github.com/homelab/rack/nodes/kube"
)

// The upgrade path from the test rack's k3s (fakek3s.DefaultVersion,
// v1.33.5+k3s1): the newest 1.34, then the newest 1.35 (rack's catalog).
const (
	v134 = "v1.34.9+k3s1"
	v135 = "v1.35.6+k3s1"
	// at134 is a date 1.34 is supported at; at135 one both are.
	at134 = "2026-09-01"
	at135 = "2026-12-01"
)

// allowCgroupV1 adds cluster.k3s.args: [--kubelet-arg=fail-cgroupv1=false] to
// the lab's inventory: the test hosts are on cgroup v1.
func allowCgroupV1(t *testing.T, lab *testlab.Lab) {
	t.Helper()
	if err := lab.WriteInventory(""); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(lab.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	airgap := "    airgap: " + lab.Airgap + "\n"
	if !strings.Contains(string(b), airgap) {
		t.Fatalf("the lab's inventory has no %q line:\n%s", airgap, b)
	}
	s := strings.Replace(string(b), airgap, airgap+`    args: ["`+upgrade.FailCgroupV1Arg+`"]`+"\n", 1)
	if err := os.WriteFile(lab.Inventory, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func kubeletVersions(t *testing.T, lab *testlab.Lab) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range lab.Spec.Nodes {
		out[n.Name] = kubeletVersion(t, lab, n.Name)
	}
	return out
}

func addVersions(t *testing.T, lab *testlab.Lab, versions ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, v := range versions {
		if err := lab.AddVersionDir(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
}

func noneCordoned(t *testing.T, lab *testlab.Lab) {
	t.Helper()
	for _, n := range lab.Spec.Nodes {
		if k := getNode(t, lab.Clientset(), n.Name); k.Spec.Unschedulable || k.Annotations[kube.AnnotationCordonedBy] != "" {
			t.Errorf("%s: unschedulable=%v annotations=%v", n.Name, k.Spec.Unschedulable, k.Annotations)
		}
	}
}

// TestUpgradePreflight: on cgroup v1 hosts a step to k3s 1.35 is refused
// with both fixes; an object written under an API version the path removes
// is named with the version replacing it and refuses the upgrade unless
// --force, while one of the same kind written under the new version is not
// named. Nothing changes in either case.
func TestUpgradePreflight(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := testlab.New(t, testlab.Spec{Cluster: "preflight", Nodes: []testlab.Node{{Name: "srv", Role: "server"}, {Name: "wrk", Role: "agent"}}})
	mustUp(t, lab)
	addVersions(t, lab, v134, v135)
	env, inv := lab.Env(), []string{"-i", lab.Inventory}
	before := kubeletVersions(t, lab)

	out, errOut, code := rack(t, env, append(inv, "upgrade", "apply", "--to", "v1.35", "--at", at135, "--yes")...)
	if code != exitFailed || !strings.Contains(errOut, "the upgrade is refused, nothing was changed") {
		t.Fatalf("upgrade to 1.35 on cgroup v1: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"REFUSED  srv runs on cgroup v1", "REFUSED  wrk runs on cgroup v1", "the kubelet of k3s " + v135 + " refuses cgroup v1",
		"unified cgroup hierarchy", upgrade.FailCgroupV1Arg, "ok       every node is Ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, out)
		}
	}

	// A CRD served as v1beta1 and v1; the catalog says 1.34 removes v1beta1.
	dyn, err := dynamic.NewForConfig(lab.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	createWidgets(t, dyn)
	cat := catalog.Embedded()
	m, ok := cat.Lookup("1.34")
	if !ok {
		t.Fatal("no 1.34 in the catalog")
	}
	m.RemovedAPIs = append(m.RemovedAPIs, catalog.RemovedAPI{Group: "rack-test.homelab", Version: "v1beta1", Kind: "Widget", Replacement: "rack-test.homelab/v1"})
	catFile := filepath.Join(t.TempDir(), "catalog.yaml")
	if err := os.WriteFile(catFile, catalog.Format(cat, "test catalog: 1.34 removes rack-test.homelab/v1beta1"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(inv, "upgrade", "apply", "--to", "v1.34", "--at", at134, "--catalog", catFile)
	out, errOut, code = rack(t, env, append(args, "--yes")...)
	if code != exitFailed {
		t.Fatalf("upgrade with a Widget under a removed API: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"REFUSED  Widget default/old was written under rack-test.homelab/v1beta1, which k3s 1.34 no longer serves",
		"migrate it to rack-test.homelab/v1", "or pass --force"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "default/new") {
		t.Errorf("a Widget written under v1 is named:\n%s", out)
	}
	// --force lets it through (here it then stops at the confirmation,
	// which has no terminal).
	out, errOut, code = rack(t, env, append(args, "--force")...)
	if code != exitUsage || !strings.Contains(out, "FORCED   Widget default/old") || !strings.Contains(errOut, "pass --yes") {
		t.Fatalf("--force: exit %d\n%s\n%s", code, out, errOut)
	}
	if after := kubeletVersions(t, lab); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("versions changed although every run was refused: %v → %v", before, after)
	}
	noneCordoned(t, lab)
	if out, _ := lab.Host("wrk").Exec(context.Background(), "/usr/local/bin/k3s --version | head -n 1"); !strings.Contains(string(out), lab.Spec.Version) {
		t.Errorf("wrk's binary changed: %s", out)
	}
}

func createWidgets(t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	ctx := context.Background()
	schemaProps := map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	version := func(name string, storage bool) map[string]any {
		return map[string]any{"name": name, "served": true, "storage": storage, "schema": map[string]any{"openAPIV3Schema": schemaProps}}
	}
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.rack-test.homelab"},
		"spec": map[string]any{"group": "rack-test.homelab", "scope": "Namespaced",
			"names":    map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{version("v1beta1", false), version("v1", true)}},
	}}
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dyn.Resource(crds).Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"old": "v1beta1", "new": "v1"} {
		gvr := schema.GroupVersionResource{Group: "rack-test.homelab", Version: v, Resource: "widgets"}
		w := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "rack-test.homelab/" + v, "kind": "Widget",
			"metadata": map[string]any{"name": name, "namespace": "default"}, "spec": map[string]any{"size": 1}}}
		testenv.WaitFor(t, testenv.Within(t, time.Minute), "Widget "+name+" created under "+v, func() (bool, string) {
			_, err := dyn.Resource(gvr).Namespace("default").Create(ctx, w, metav1.CreateOptions{FieldManager: "widget-tool"})
			if err != nil {
				return false, err.Error()
			}
			return true, ""
		})
	}
}

// rackTimed runs rack as its own process like rack() does, with every stderr line
// stamped with the time since the start (logged when the test fails).
func rackTimed(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	errw := &stampWriter{start: time.Now()}
	stdout, stderr, code = rackProcess(t, env, errw, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("rack %s: stderr:\n%s", strings.Join(args, " "), stderr)
		}
	})
	return stdout, stderr, code
}

func (w *stampWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

type stampWriter struct {
	mu     sync.Mutex
	start  time.Time
	b      strings.Builder
	inLine bool
}

func (w *stampWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		if !w.inLine {
			fmt.Fprintf(&w.b, "%6.1fs ", time.Since(w.start).Seconds())
		}
		w.b.WriteString(line)
		w.inLine = !strings.HasSuffix(line, "\n")
	}
	return len(p), nil
}

// statusSupport reads rack status -o json's support object.
func statusSupport(t *testing.T, lab *testlab.Lab) (catalog.Support, string) {
	t.Helper()
	out, errOut, code := rack(t, lab.Env(), "-i", lab.Inventory, "status", "-o", "json")
	if code != exitOK {
		t.Fatalf("status: exit %d\n%s\n%s", code, out, errOut)
	}
	var st struct {
		Cluster string
		Nodes   []map[string]any
		Support *catalog.Support
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Support == nil || len(st.Nodes) != len(lab.Spec.Nodes) {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	text, _, _ := rack(t, lab.Env(), "-i", lab.Inventory, "status")
	return *st.Support, text
}

func checkSupport(t *testing.T, lab *testlab.Lab, version string) {
	t.Helper()
	got, text := statusSupport(t, lab)
	want, err := catalog.Embedded().SupportOf(version, catalog.Today())
	if err != nil {
		t.Fatal(err)
	}
	if got.Minor != want.Minor || got.Supported != want.Supported || got.EOL != want.EOL || got.DaysLeft != want.DaysLeft {
		t.Errorf("support at %s: %+v, want %+v", version, got, want)
	}
	if want.Warning != "" && !strings.Contains(text, "warning: "+want.Warning) {
		t.Errorf("status text lacks the warning %q:\n%s", want.Warning, text)
	}
}

// TestUpgradeTwoMinors upgrades one server and two agents running
// workloads behind a PodDisruptionBudget two minors, through the newest
// 1.34 to the newest 1.35: servers first, every node drained, restarted and
// back Ready at each version (read from Node status), nothing left
// cordoned; the applied record lets rack plan agree afterwards; rack status
// reports the support window before and after.
func TestUpgradeTwoMinors(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := testlab.New(t, testlab.Spec{Cluster: "upgrade", Nodes: []testlab.Node{
		{Name: "srv", Role: "server"}, {Name: "wrk-1", Role: "agent"}, {Name: "wrk-2", Role: "agent"},
	}})
	allowCgroupV1(t, lab)
	mustUp(t, lab)
	checkSupport(t, lab, lab.Spec.Version)
	addVersions(t, lab, v134, v135)
	cs := lab.Clientset()
	// Under load kwok's heartbeats come late and the node controller marks
	// pods not ready for good; budgets would then never allow a disruption.
	apptest.KeepReady(t, cs, "default")
	mustCreate(t, cs.AppsV1().DaemonSets("default").Create, logsDaemonSet())
	mustCreate(t, cs.AppsV1().Deployments("default").Create, webDeployment("web", 3, ""))
	mustCreate(t, cs.PolicyV1().PodDisruptionBudgets("default").Create, pdb("web", nil, intOrStr(1)))
	testenv.WaitFor(t, testenv.Within(t, time.Minute), "3 web pods Running and the budget allowing one disruption", func() (bool, string) {
		b, err := cs.PolicyV1().PodDisruptionBudgets("default").Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return b.Status.CurrentHealthy == 3 && b.Status.DisruptionsAllowed == 1, fmt.Sprintf("budget %+v", b.Status)
	})

	env, inv := lab.Env(), []string{"-i", lab.Inventory}
	out, errOut, code := rackTimed(t, env, append(inv, "upgrade", "apply", "--to", "v1.35", "--at", at135, "--yes")...)
	if code != exitOK {
		t.Fatalf("upgrade: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("rack upgrade apply:\n%s", errOut)
	for _, want := range []string{"k3s v1.33.5+k3s1 → " + v135 + ", 2 step(s)", "note     PDB default/web allows 1 disruption(s)",
		"srv (server) → " + v134, "wrk-2 (agent) → " + v135, "drain wrk-1 (cordon, evict through the Eviction API)", "uncordon wrk-2",
		"the cluster runs k3s " + v135, "set cluster.k3s.version to " + v135} {
		if !strings.Contains(out, want) {
			t.Errorf("the upgrade's output lacks %q:\n%s", want, out)
		}
	}
	// The order: each step's server before its agents, 1.34 everywhere before 1.35.
	order := []string{"srv (server) → " + v134, "wrk-1 (agent) → " + v134, "wrk-2 (agent) → " + v134, "srv (server) → " + v135, "wrk-1 (agent) → " + v135, "wrk-2 (agent) → " + v135}
	last := -1
	for _, o := range order {
		i := strings.Index(out, o)
		if i < last {
			t.Errorf("%q comes too early:\n%s", o, out)
		}
		last = i
	}
	if !strings.Contains(errOut, "evicting pod default/web-") {
		t.Errorf("no eviction in the progress:\n%s", errOut)
	}
	for n, v := range kubeletVersions(t, lab) {
		if v != v135 {
			t.Errorf("%s runs %s after the upgrade, want %s", n, v, v135)
		}
	}
	noneCordoned(t, lab)
	checkSupport(t, lab, v135)
	out, _, code = rack(t, env, append(inv, "upgrade", "apply", "--to", "v1.35", "--at", at135, "--yes")...)
	if code != exitOK || !strings.Contains(out, "nothing to upgrade") {
		t.Errorf("a second run: exit %d\n%s", code, out)
	}
	// rack up does not change versions: with the old version in the
	// inventory it refuses (newer installed); with the new one it agrees
	// with what the upgrade recorded.
	out, errOut, code = rack(t, env, append(inv, "plan")...)
	if code != exitFailed || !strings.Contains(out+errOut, "newer than the inventory's") {
		t.Errorf("rack plan with the inventory behind: exit %d, want a refusal that says the installed version is newer\n%s\n%s", code, out, errOut)
	}
	// The inventory moves to the version the upgrade installed: the same
	// release files, now in the airgap folder itself.
	for _, f := range []string{"k3s", "k3s-arm64", "k3s-armhf", "sha256sum-amd64.txt", "sha256sum-arm64.txt", "sha256sum-arm.txt", "k3s-airgap-images-amd64.tar.zst", "k3s-airgap-images-arm64.tar.zst"} {
		b, err := os.ReadFile(filepath.Join(lab.Airgap, v135, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(lab.Airgap, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lab.Spec.Version = v135
	allowCgroupV1(t, lab)
	if plan := planText(t, lab); !strings.Contains(plan, "no changes") {
		t.Errorf("rack plan after the upgrade, with the inventory at %s:\n%s", v135, plan)
	}
	var web corev1.PodList
	if l, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"}); err == nil {
		web = *l
	}
	running := 0
	for _, p := range web.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			running++
		}
	}
	if running != 3 {
		t.Errorf("%d web pods running after the upgrade, want 3", running)
	}
}

// TestUpgradeKilledResumes kills rack upgrade apply (a real process,
// SIGKILL) while the agent's k3s restarts onto the new version: the agent
// keeps its old version and stays cordoned by rack; rack up refuses to
// touch the versions; the next rack upgrade apply resumes, finishes and
// uncordons it.
func TestUpgradeKilledResumes(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	lab := testlab.New(t, testlab.Spec{Cluster: "resume", Nodes: []testlab.Node{{Name: "srv", Role: "server"}, {Name: "wrk", Role: "agent"}}})
	ctx := killCtx(t)
	mustUp(t, lab)
	addVersions(t, lab, v134)
	wrk := lab.Host("wrk")
	if err := fakek3s.CloseGate(ctx, wrk, "restart", "k3s-agent"); err != nil {
		t.Fatal(err)
	}
	cmd := startRack(t, lab, "upgrade", "apply", "--to", "v1.34", "--at", at134, "--yes")
	if _, err := fakek3s.WaitAtGate(ctx, wrk, "restart", "k3s-agent"); err != nil {
		t.Fatal(err)
	}
	sigkill(t, cmd)
	if err := fakek3s.KillAtGate(ctx, wrk, "restart", "k3s-agent"); err != nil {
		t.Fatal(err)
	}
	if v := kubeletVersion(t, lab, "srv"); v != v134 {
		t.Fatalf("srv runs %s, want %s: the server goes first", v, v134)
	}
	if v := kubeletVersion(t, lab, "wrk"); v != lab.Spec.Version {
		t.Fatalf("wrk runs %s although rack was killed before its restart", v)
	}
	if out, _ := wrk.Exec(ctx, "/usr/local/bin/k3s --version | head -n 1"); !strings.Contains(string(out), v134) {
		t.Fatalf("the new binary is not in place on wrk: %s", out)
	}
	if n := getNode(t, lab.Clientset(), "wrk"); !n.Spec.Unschedulable || n.Annotations[kube.AnnotationCordonedBy] != kube.CordonedByUpgrade {
		t.Fatalf("wrk after the kill: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}
	env, inv := lab.Env(), []string{"-i", lab.Inventory}
	_, errOut, code := rack(t, env, append(inv, "up", "--nodes-only", "--yes")...)
	if code != exitFailed || !strings.Contains(errOut, "rack upgrade apply") {
		t.Errorf("rack up in the middle of an upgrade: exit %d\n%s", code, errOut)
	}
	out, errOut, code := rack(t, env, append(inv, "upgrade", "apply", "--to", "v1.34", "--at", at134, "--yes")...)
	if code != exitOK {
		t.Fatalf("resumed upgrade: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "wrk was cordoned by an interrupted rack upgrade apply") || strings.Contains(out, "srv (server) → ") {
		t.Errorf("the resumed run's plan:\n%s", out)
	}
	for n, v := range kubeletVersions(t, lab) {
		if v != v134 {
			t.Errorf("%s runs %s after the resumed upgrade, want %s", n, v, v134)
		}
	}
	noneCordoned(t, lab)
	noTempFiles(t, lab, "wrk")
}
