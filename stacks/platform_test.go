package stacks

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/argocd"
	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/inventory"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optup"
)

// These tests run `rack up`'s platform phase for real: rack's Automation
// API wiring, the pulumi CLI, the kubernetes provider plugin and Helm
// inside it, the upstream charts from the chart mirror, against the test
// control plane (a real kube-apiserver, controller-manager and scheduler;
// kwok plays the kubelets, so pods are "Running" without running). What
// needs pods that really run (MetalLB's and Longhorn's webhooks) is in
// realpods_test.go.

// platRack is a test control plane with Nodes kwok keeps Ready, an
// inventory folder whose state dir holds the cluster's kubeconfig (where
// rack up's node phase leaves it), and the pulumi CLI with the plugin.
type platRack struct {
	name   string
	c      *testcluster.Cluster
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	home   string // PULUMI_HOME
	dir    string // the inventory's folder
	mirror string // the chart mirror: the upstream charts
}

func newPlatRack(t testing.TB, name string, nodes ...string) *platRack {
	t.Helper()
	home := pulumiWithKubernetes(t)
	mirror := addontest.ChartsDir(t)
	c := testcluster.New(t)
	r := &platRack{name: name, c: c, cs: c.Clientset(), home: home, dir: t.TempDir(), mirror: mirror}
	var err error
	if r.dyn, err = dynamic.NewForConfig(c.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{
			"kubernetes.io/hostname": n, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}}
		if _, err := r.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(EnvPassphrase, "")
	t.Setenv(EnvChartMirror, "")
	admin, err := os.ReadFile(c.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(r.dir, ".rack", name)
	platWrite(t, filepath.Join(state, KubeconfigFile), admin)
	return r
}

// inventory writes rack.yaml (nodes, then addons) and loads it.
func (r *platRack) inventory(t testing.TB, nodes, addons string) *inventory.Inventory {
	t.Helper()
	text := fmt.Sprintf("cluster: {name: %s, k3s: {version: v1.33.5+k3s1}}\nssh: {user: pi}\nnodes:\n%saddons:\n  chartMirror: %s\n%s",
		r.name, nodes, r.mirror, addons)
	file := filepath.Join(r.dir, "rack.yaml")
	platWrite(t, file, []byte(text))
	inv, problems, err := inventory.Load(file)
	if err != nil || problems.HasErrors() {
		t.Fatalf("%s: %v %v", file, err, problems)
	}
	return inv
}

// up runs Up as rack up does, logging its time and changes.
func (r *platRack) up(t testing.TB, what string, inv *inventory.Inventory, opts Options) (Result, string, error) {
	t.Helper()
	var progress testenv.Buffer
	opts.PulumiHome = r.home
	opts.Progress = &progress
	start := time.Now()
	res, err := Up(context.Background(), inv, opts)
	t.Logf("%s: %v, changes %v", what, time.Since(start).Round(time.Millisecond), res.Changes)
	if err != nil && testing.Verbose() {
		t.Logf("progress:\n%s", progress.String())
	}
	return res, progress.String(), err
}

func (r *platRack) mustUp(t testing.TB, what string, inv *inventory.Inventory, opts Options) (Result, string) {
	t.Helper()
	res, progress, err := r.up(t, what, inv, opts)
	if err != nil {
		t.Fatalf("%s: %v\nprogress:\n%s", what, err, progress)
	}
	return res, progress
}

// release is the newest Helm record of a release (nil: none).
func (r *platRack) release(t *testing.T, ns, name string) *helmRelease {
	t.Helper()
	rel, err := latestHelmRelease(context.Background(), r.cs, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func (r *platRack) wantRelease(t *testing.T, ns, name, chart, version string, revision int) {
	t.Helper()
	rel := r.release(t, ns, name)
	if rel == nil {
		t.Fatalf("no Helm release %s/%s", ns, name)
	}
	if rel.Status != helmDeployed || rel.Chart != chart || rel.ChartVersion != version || rel.Revision != revision {
		t.Errorf("Helm release %s/%s: %s %s revision %d %s; want %s %s revision %d deployed",
			ns, name, rel.Chart, rel.ChartVersion, rel.Revision, rel.Status, chart, version, revision)
	}
}

// onlySame fails unless every resource was left as it was.
func onlySame(t testing.TB, what string, changes map[string]int) {
	t.Helper()
	for op, n := range changes {
		if op != "same" && n > 0 {
			t.Errorf("%s: %d %s; want nothing but same (%v)", what, n, op, changes)
		}
	}
	if changes["same"] == 0 {
		t.Errorf("%s: changes %v", what, changes)
	}
}

const platNodes = `  - {name: n1, address: 10.99.0.1, role: server, storage: {local: [{name: data-1, path: /srv/data, capacity: 1Gi}]}}
  - {name: n2, address: 10.99.0.2, role: agent}
`

const argoCDAddon = `  argocd: {repo: "https://git.lan/homelab-gitops.git", path: apps, revision: main}
`

// TestPlatformForReal: local volumes and Argo CD from the real chart, then
// a converged run, an inventory change, a release deleted by hand, and an
// addon taken out of the inventory.
func TestPlatformForReal(t *testing.T) {
	r := newPlatRack(t, "plat", "n1", "n2")
	ctx := context.Background()
	// k3s' own local-path class, the default until Longhorn replaces it.
	localPath := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local-path",
		Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}}, Provisioner: "rancher.io/local-path"}
	if _, err := r.cs.StorageV1().StorageClasses().Create(ctx, localPath, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	inv := r.inventory(t, platNodes, "  localPV: {}\n"+argoCDAddon)

	res, _ := r.mustUp(t, "first up", inv, Options{})
	if res.Changes["create"] < 9 {
		t.Errorf("first up created %v", res.Changes)
	}
	if got := res.Outputs[OutputArgoCDAddress]; got != "https://argocd-server.argocd.svc.cluster.local" {
		t.Errorf("argocd address %v", got)
	}

	t.Run("local volumes", func(t *testing.T) {
		sc, err := r.cs.StorageV1().StorageClasses().Get(ctx, "local-storage", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sc.Provisioner != "kubernetes.io/no-provisioner" || sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
			t.Errorf("StorageClass %s: provisioner %s, binding %v", sc.Name, sc.Provisioner, sc.VolumeBindingMode)
		}
		wantDefaults(t, r.cs, "local-path")
		pv, err := r.cs.CoreV1().PersistentVolumes().Get(ctx, "data-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		terms := pv.Spec.NodeAffinity.Required.NodeSelectorTerms
		if len(terms) != 1 || len(terms[0].MatchExpressions) != 1 || terms[0].MatchExpressions[0].Key != "kubernetes.io/hostname" ||
			!slices.Equal(terms[0].MatchExpressions[0].Values, []string{"n1"}) {
			t.Errorf("PV data-1 node affinity %+v, want hostname In [n1]", terms)
		}
		if pv.Spec.Local == nil || pv.Spec.Local.Path != "/srv/data" || pv.Spec.StorageClassName != "local-storage" ||
			pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain || pv.Status.Phase != corev1.VolumeAvailable {
			t.Errorf("PV data-1: %+v, status %s", pv.Spec, pv.Status.Phase)
		}
	})

	t.Run("Argo CD", func(t *testing.T) {
		r.wantRelease(t, argocd.DefaultNamespace, "argocd", "argo-cd", argocd.ChartVersion, 1)
		pods, err := r.cs.CoreV1().Pods(argocd.DefaultNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running < 5 {
			t.Errorf("%d of %d Argo CD pods Running (kwok's)", running, len(pods.Items))
		}
		app, err := r.dyn.Resource(applications).Namespace(argocd.DefaultNamespace).Get(ctx, argocd.DefaultRootApp, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("root Application: %v", err)
		}
		if fins := app.GetFinalizers(); len(fins) > 0 {
			t.Errorf("root Application finalizers %v: deleting it would cascade into the apps", fins)
		}
		src, _, _ := unstructuredMap(app.Object, "spec", "source")
		if src["repoURL"] != "https://git.lan/homelab-gitops.git" || src["path"] != "apps" || src["targetRevision"] != "main" {
			t.Errorf("root Application source %v", src)
		}
	})

	t.Run("rack status", func(t *testing.T) {
		addons, err := ReadAddons(ctx, r.cs, inv)
		if err != nil {
			t.Fatal(err)
		}
		if len(addons) != 2 {
			t.Fatalf("addons %+v", addons)
		}
		a := addons[0]
		if a.Name != "argocd" || a.Chart != "argo-cd" || a.Version != argocd.ChartVersion || a.Status != "deployed" || !a.Healthy() {
			t.Errorf("argocd status %+v", a)
		}
		var ready, wanted int
		if _, err := fmt.Sscanf(a.Ready, "%d/%d", &ready, &wanted); err != nil || wanted < 5 || ready != wanted {
			t.Errorf("argocd ready %q: want every pod of its workloads ready", a.Ready)
		}
		if l := addons[1]; l.Name != "localPV" || l.Status != "deployed" || !l.Healthy() {
			t.Errorf("localPV status %+v", l)
		}
		var b strings.Builder
		if err := WriteAddonsText(&b, addons); err != nil {
			t.Fatal(err)
		}
		t.Logf("rack status, addons:\n%s", b.String())
	})

	t.Run("a second run changes nothing", func(t *testing.T) {
		res, _ := r.mustUp(t, "second up", inv, Options{})
		onlySame(t, "second up", res.Changes)
		r.wantRelease(t, argocd.DefaultNamespace, "argocd", "argo-cd", argocd.ChartVersion, 1) // no Helm upgrade
	})

	t.Run("an inventory change updates only that", func(t *testing.T) {
		nodes := strings.Replace(platNodes, "role: agent}", "role: agent, storage: {local: [{name: data-2, path: /srv/more, capacity: 2Gi}]}}", 1)
		inv = r.inventory(t, nodes, "  localPV: {}\n"+strings.Replace(argoCDAddon, "revision: main", "revision: v2", 1))
		res, _ := r.mustUp(t, "changed up", inv, Options{})
		if res.Changes["create"] != 1 || res.Changes["update"] != 1 || res.Changes["delete"] != 0 || res.Changes["replace"] != 0 {
			t.Errorf("changes %v, want the new volume created and the root Application updated, nothing else", res.Changes)
		}
		if _, err := r.cs.CoreV1().PersistentVolumes().Get(ctx, "data-2", metav1.GetOptions{}); err != nil {
			t.Error(err)
		}
		app, err := r.dyn.Resource(applications).Namespace(argocd.DefaultNamespace).Get(ctx, argocd.DefaultRootApp, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if src, _, _ := unstructuredMap(app.Object, "spec", "source"); src["targetRevision"] != "v2" {
			t.Errorf("root app revision %v", src["targetRevision"])
		}
		r.wantRelease(t, argocd.DefaultNamespace, "argocd", "argo-cd", argocd.ChartVersion, 1)
	})

	t.Run("a release deleted by hand is noticed", func(t *testing.T) {
		// What `helm uninstall argocd` does, in part: the release's records
		// and one of its Deployments go.
		for _, rel := range mustReleases(t, r.cs, argocd.DefaultNamespace, "argocd") {
			if err := r.cs.CoreV1().Secrets(argocd.DefaultNamespace).Delete(ctx, rel.Secret, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.cs.AppsV1().Deployments(argocd.DefaultNamespace).Delete(ctx, "argocd-server", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		res, _ := r.mustUp(t, "up after helm uninstall", inv, Options{})
		if res.Changes["create"] != 1 {
			t.Errorf("changes %v, want the release installed again", res.Changes)
		}
		r.wantRelease(t, argocd.DefaultNamespace, "argocd", "argo-cd", argocd.ChartVersion, 1)
		if _, err := r.cs.AppsV1().Deployments(argocd.DefaultNamespace).Get(ctx, "argocd-server", metav1.GetOptions{}); err != nil {
			t.Errorf("argocd-server is not back: %v", err)
		}
	})

	t.Run("removing Argo CD asks first and does not cascade", func(t *testing.T) {
		// A root app as an older rack made it: with the finalizer that has
		// Argo CD delete everything the app synced along with it.
		patch := fmt.Sprintf(`{"metadata":{"finalizers":[%q]}}`, argocd.Finalizer)
		if _, err := r.dyn.Resource(applications).Namespace(argocd.DefaultNamespace).Patch(ctx, argocd.DefaultRootApp, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		inv = r.inventory(t, platNodes, "  localPV: {}\n")

		_, _, err := r.up(t, "up without Argo CD, unconfirmed", inv, Options{})
		var refused *RemovalError
		if !errors.As(err, &refused) {
			t.Fatalf("error %v, want a refusal listing what would go", err)
		}
		want := Removal{Stack: "plat",
			Deleted: []Removed{{"argocd", "Application", "argocd/root"}, {"argocd", "Release", "argocd/argocd"}},
			Kept:    []Removed{{"argocd", "Namespace", "argocd"}, {"localPV", "PersistentVolume", "data-2"}},
		}
		if got := refused.Removal; !slices.Equal(got.Deleted, want.Deleted) || !slices.Equal(got.Kept, want.Kept) {
			t.Errorf("removal\n got %+v\nwant %+v", got, want)
		}
		for _, s := range []string{"DELETE", "argocd/root", "not without confirmation", "rack up --yes"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("refusal does not say %q:\n%v", s, err)
			}
		}
		_, _, err = r.up(t, "up without Argo CD, declined", inv, Options{Confirm: func(Removal) error { return errors.New("cancelled") }})
		if !errors.As(err, &refused) || !strings.Contains(err.Error(), "cancelled: nothing was changed") {
			t.Fatalf("declined: %v", err)
		}
		// Nothing was changed.
		r.wantRelease(t, argocd.DefaultNamespace, "argocd", "argo-cd", argocd.ChartVersion, 1)
		if _, err := r.dyn.Resource(applications).Namespace(argocd.DefaultNamespace).Get(ctx, argocd.DefaultRootApp, metav1.GetOptions{}); err != nil {
			t.Fatalf("the root app went although the removal was refused: %v", err)
		}

		var asked Removal
		res, progress := r.mustUp(t, "up without Argo CD, confirmed", inv, Options{Confirm: func(rm Removal) error { asked = rm; return nil }})
		if len(asked.Deleted) != 2 {
			t.Errorf("confirmation asked about %+v", asked)
		}
		// The engine counts what it forgets (retained) as deleted too.
		if res.Changes["delete"] == 0 || res.Changes["create"]+res.Changes["update"]+res.Changes["replace"] > 0 {
			t.Errorf("changes %v, want deletions only", res.Changes)
		}
		if !strings.Contains(progress, "removed the resources finalizer of Application argocd/root") {
			t.Errorf("the finalizer was not taken off first:\n%s", progress)
		}
		if rel := r.release(t, argocd.DefaultNamespace, "argocd"); rel != nil {
			t.Errorf("Helm release argocd still recorded: %+v", rel)
		}
		// No Argo CD controller runs here: with the finalizer the app would
		// hang in Terminating; without it, it is simply gone.
		if _, err := r.dyn.Resource(applications).Namespace(argocd.DefaultNamespace).Get(ctx, argocd.DefaultRootApp, metav1.GetOptions{}); !isNotFound(err) {
			t.Errorf("root Application after removal: %v", err)
		}
		if _, err := r.cs.CoreV1().Namespaces().Get(ctx, argocd.DefaultNamespace, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace argocd (the apps' Applications) was deleted: %v", err)
		}
	})

	t.Run("removing local volumes keeps them", func(t *testing.T) {
		inv = r.inventory(t, platNodes, "")
		_, _, err := r.up(t, "up without localPV, unconfirmed", inv, Options{})
		var refused *RemovalError
		if !errors.As(err, &refused) {
			t.Fatalf("error %v, want a refusal", err)
		}
		// data-2 left rack's hands with the previous change already.
		wantKept := []Removed{{"localPV", "PersistentVolume", "data-1"}, {"localPV", "StorageClass", "local-storage"}}
		if !slices.Equal(refused.Removal.Kept, wantKept) || len(refused.Removal.Deleted) != 0 {
			t.Errorf("removal %+v, want kept %v and nothing deleted", refused.Removal, wantKept)
		}
		r.mustUp(t, "up without localPV, confirmed", inv, Options{Confirm: func(Removal) error { return nil }})
		for _, pv := range []string{"data-1", "data-2"} {
			if _, err := r.cs.CoreV1().PersistentVolumes().Get(ctx, pv, metav1.GetOptions{}); err != nil {
				t.Errorf("PV %s: %v", pv, err)
			}
		}
		res, _ := r.mustUp(t, "up after the removal", inv, Options{})
		if res.Changes["delete"] != 0 || res.Changes["create"] != 0 {
			t.Errorf("changes %v", res.Changes)
		}
	})
}

// wantDefaults fails unless exactly the named classes are marked default.
func wantDefaults(t *testing.T, cs kubernetes.Interface, want ...string) {
	t.Helper()
	list, err := cs.StorageV1().StorageClasses().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sc := range list.Items {
		if sc.Annotations["storageclass.kubernetes.io/is-default-class"] == "true" {
			got = append(got, sc.Name)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("default StorageClasses %v, want exactly %v", got, want)
	}
}

func mustReleases(t *testing.T, cs kubernetes.Interface, ns, name string) []*helmRelease {
	t.Helper()
	rels, err := helmReleases(context.Background(), cs, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return rels
}

func unstructuredMap(obj map[string]any, path ...string) (map[string]any, bool, error) {
	cur := obj
	for _, k := range path {
		next, ok := cur[k].(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = next
	}
	return maps.Clone(cur), true, nil
}

func platWrite(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkStacksRerun reports stacks_rerun_seconds, a converged `rack up`
// platform run (local volumes and Argo CD from the real chart, on the test
// control plane; goal <= 10 s), and up_vs_pulumi: that run against a bare
// Automation API `pulumi up --refresh` of the same program, stack and state,
// timed side by side (goal <= 1.2: rack's chart check, interrupted-release
// recovery and removal preview add little).
func BenchmarkStacksRerun(b *testing.B) {
	r := newPlatRack(b, "bench", "n1", "n2")
	inv := r.inventory(b, platNodes, "  localPV: {}\n"+argoCDAddon)
	r.mustUp(b, "first up", inv, Options{})
	ctx := context.Background()
	var tRack, tBare time.Duration
	for b.Loop() {
		start := time.Now()
		res, _ := r.mustUp(b, "converged up", inv, Options{})
		tRack += time.Since(start)
		onlySame(b, "converged up", res.Changes)

		run, err := platformRun(inv, Options{PulumiHome: r.home})
		if err != nil {
			b.Fatal(err)
		}
		st, err := run.open(ctx, Options{PulumiHome: r.home})
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if _, err := st.Up(ctx, optup.Refresh()); err != nil {
			b.Fatalf("bare pulumi up: %v", err)
		}
		tBare += time.Since(start)
	}
	b.ReportMetric(tRack.Seconds()/float64(b.N), "stacks_rerun_seconds")
	b.ReportMetric(tRack.Seconds()/tBare.Seconds(), "up_vs_pulumi")
}
