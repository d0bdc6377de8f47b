package stacks

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/longhorn"
	"github.com/homelab/rack/addons/metallb"
	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes/k3s"
)

// podsCluster is a cluster whose pods really run (kubelets, containerd,
// the addons' images), which MetalLB's and Longhorn's admission webhooks
// need: the test control plane's kwok only pretends to run pods.
type podsCluster struct {
	// Kubeconfig is an admin kubeconfig (its current context).
	Kubeconfig string
	// Nodes are the registered node names; each has an empty folder at
	// StoragePath Longhorn may use.
	Nodes       []string
	StoragePath string
	// Pool is an address range on the nodes' network, outside every node
	// and the cluster's networks, that MetalLB may hand out; Pool2 another.
	Pool, Pool2 string
}

// realPodsCluster gives a test a cluster with real pods, stopped at the
// end of the test.
func realPodsCluster(t *testing.T) *podsCluster {
	t.Helper()
	// One server and one agent, both real nodes; two spare addresses on
	// the test network for MetalLB's pools.
	lab := testlab.New(t, testlab.Spec{Cluster: "pods", Spare: 2, Nodes: []testlab.Node{
		{Name: "pods-server", Role: "server", Real: true},
		{Name: "pods-agent", Role: "agent", Real: true},
	}})
	inv := lab.LoadInventory(t)
	o := lab.K3sOptions(t, inv)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	plan, err := k3s.BuildPlan(ctx, inv, o)
	if err != nil {
		t.Fatalf("plan the nodes: %v", err)
	}
	if _, err := k3s.Apply(ctx, plan, o); err != nil {
		t.Fatalf("install the nodes: %v", err)
	}
	// An admin kubeconfig of this cluster alone.
	admin, err := testcluster.Kubeconfig(lab.APIURL(), []byte(lab.CP.CAPEM), []byte(lab.CP.CertPEM), []byte(lab.CP.KeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, admin, 0o600); err != nil {
		t.Fatal(err)
	}
	return &podsCluster{
		Kubeconfig: kc,
		Nodes:      []string{"pods-server", "pods-agent"},
		Pool:       lab.Rack.Spare[0] + "/32",
		Pool2:      lab.Rack.Spare[1] + "/32",
	}
}

// realPodsRack binds a podsCluster to an inventory folder and the pulumi
// CLI with the plugin, as newPlatRack does for the test control plane.
func realPodsRack(t *testing.T, name string) (*platRack, *podsCluster) {
	t.Helper()
	pc := realPodsCluster(t)
	home := pulumiWithKubernetes(t)
	admin, err := os.ReadFile(pc.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	r := &platRack{name: name, home: home, dir: t.TempDir(), mirror: addontest.ChartsDir(t)}
	if r.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if r.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvPassphrase, "")
	t.Setenv(EnvChartMirror, "")
	platWrite(t, filepath.Join(r.dir, ".rack", name, KubeconfigFile), admin)
	return r, pc
}

func (pc *podsCluster) nodes(storage string) string {
	var b strings.Builder
	for i, n := range pc.Nodes {
		role := "agent"
		if i == 0 {
			role = "server"
		}
		fmt.Fprintf(&b, "  - {name: %s, address: 10.98.0.%d, role: %s%s}\n", n, i+1, role, storage)
	}
	return b.String()
}

var (
	l2Advertisements  = schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: "l2advertisements"}
	metalLBReadyAfter = 5 * time.Minute
)

// TestMetalLBForReal: MetalLB from the real chart, its pools through its
// webhook (rack waits out the webhook's late start), a LoadBalancer
// Service served from the pool; a second run changes nothing; a new pool
// is created alone.
func TestMetalLBForReal(t *testing.T) {
	r, pc := realPodsRack(t, "metallb")
	ctx := context.Background()
	pools := fmt.Sprintf("  metallb:\n    pools:\n      - {name: lan, addresses: [%s]}\n", pc.Pool)
	inv := r.inventory(t, pc.nodes(""), pools)

	r.mustUp(t, "first up", inv, Options{})
	r.wantRelease(t, metallb.DefaultNamespace, "metallb", "metallb", metallb.ChartVersion, 1)
	// What rack probes between runs while the webhook is silent: it
	// answers now, and the dry run stored nothing.
	if err := metalLBAnswers(ctx, r.dyn); err != nil {
		t.Errorf("probing MetalLB's webhook once it serves: %v", err)
	}
	if _, err := r.dyn.Resource(ipAddressPools).Namespace(metallb.DefaultNamespace).Get(ctx, "rack-webhook-probe", metav1.GetOptions{}); !isNotFound(err) {
		t.Errorf("the probe's pool: %v, want it never stored", err)
	}
	for _, gvr := range []schema.GroupVersionResource{ipAddressPools, l2Advertisements} {
		if _, err := r.dyn.Resource(gvr).Namespace(metallb.DefaultNamespace).Get(ctx, "lan", metav1.GetOptions{}); err != nil {
			t.Errorf("%s lan: %v", gvr.Resource, err)
		}
	}
	// No frr-k8s without a BGP pool.
	if ds, err := r.cs.AppsV1().DaemonSets(metallb.DefaultNamespace).List(ctx, metav1.ListOptions{}); err == nil {
		for _, d := range ds.Items {
			if strings.Contains(d.Name, "frr") {
				t.Errorf("DaemonSet %s runs without a BGP pool", d.Name)
			}
		}
	}

	// A LoadBalancer Service gets an address from the pool.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "lb-probe", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "none"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := r.cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(metalLBReadyAfter)
	for {
		got, err := r.cs.CoreV1().Services("default").Get(ctx, "lb-probe", metav1.GetOptions{})
		if err == nil && len(got.Status.LoadBalancer.Ingress) > 0 {
			ip := got.Status.LoadBalancer.Ingress[0].IP
			rng, err := inventory.ParseRange(pc.Pool)
			if err != nil {
				t.Fatal(err)
			}
			if !rng.Contains(mustAddr(t, ip)) {
				t.Errorf("LoadBalancer address %s is not in the pool %s", ip, pc.Pool)
			}
			t.Logf("MetalLB gave lb-probe %s", ip)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lb-probe got no address from MetalLB in %v", metalLBReadyAfter)
		}
		time.Sleep(time.Second)
	}

	res, _ := r.mustUp(t, "second up", inv, Options{})
	onlySame(t, "second up", res.Changes)
	r.wantRelease(t, metallb.DefaultNamespace, "metallb", "metallb", metallb.ChartVersion, 1)

	// MetalLB's own webhook, served by its controller pod, refuses a
	// malformed pool.
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "bad", "namespace": metallb.DefaultNamespace},
		"spec":     map[string]any{"addresses": []any{"not-an-address"}},
	}}
	_, err := r.dyn.Resource(ipAddressPools).Namespace(metallb.DefaultNamespace).Create(ctx, bad, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "admission webhook") {
		t.Errorf("a malformed pool: %v, want it refused by MetalLB's webhook", err)
	}

	// A pool added to the inventory: only it (and its advertisement) is created.
	pools2 := fmt.Sprintf("  metallb:\n    pools:\n      - {name: lan, addresses: [%s]}\n      - {name: lan2, addresses: [%s]}\n", pc.Pool, pc.Pool2)
	inv = r.inventory(t, pc.nodes(""), pools2)
	res, _ = r.mustUp(t, "a pool added", inv, Options{})
	if res.Changes["create"] != 2 || res.Changes["update"]+res.Changes["delete"]+res.Changes["replace"] > 0 {
		t.Errorf("adding a pool: changes %v, want the pool and its advertisement created alone", res.Changes)
	}
	r.wantRelease(t, metallb.DefaultNamespace, "metallb", "metallb", metallb.ChartVersion, 1)

	addons, err := ReadAddons(ctx, r.cs, inv)
	if err != nil || len(addons) != 1 || !addons[0].Healthy() {
		t.Errorf("rack status: %+v, %v", addons, err)
	}
}

// TestLonghornForReal: Longhorn from the real chart on the nodes that
// offer storage; its class is the one default; a replica change updates
// the release alone (its pre- and post-upgrade hook Jobs complete);
// taking it out of the inventory keeps it (and the volumes) running.
//
// On the test control plane, not on real nodes: Longhorn's images (its
// manager needs iSCSI and the host's block devices) cannot be built or run
// here, so kwok plays its pods. The chart itself installs no admission
// webhook (longhorn-manager registers it once running), so nothing here
// needs a pod that really answers.
func TestLonghornForReal(t *testing.T) {
	names := []string{"n1", "n2"}
	r := newPlatRack(t, "longhorn", names...)
	pc := &podsCluster{Nodes: names, StoragePath: "/var/lib/longhorn"}
	ctx := context.Background()
	nodes := pc.nodes(fmt.Sprintf(", storage: {longhorn: %s}", pc.StoragePath))
	inv := r.inventory(t, nodes, "  longhorn: {replicas: 1}\n")

	r.mustUp(t, "first up", inv, Options{})
	r.wantRelease(t, longhorn.DefaultNamespace, "longhorn", "longhorn", longhorn.ChartVersion, 1)
	// longhorn-manager creates the class from the chart's ConfigMap once it
	// runs (never here): the ConfigMap must make it the default, and no
	// other class may be one.
	cm, err := r.cs.CoreV1().ConfigMaps(longhorn.DefaultNamespace).Get(ctx, "longhorn-storageclass", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sc := cm.Data["storageclass.yaml"]; !strings.Contains(sc, "name: "+longhorn.StorageClass) || !strings.Contains(sc, `storageclass.kubernetes.io/is-default-class: "true"`) {
		t.Errorf("Longhorn's class, as its manager will create it:\n%s", sc)
	}
	wantDefaults(t, r.cs)
	for _, n := range pc.Nodes {
		node, err := r.cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if node.Labels[longhorn.LabelCreateDefaultDisk] != "config" {
			t.Errorf("node %s is not marked for a Longhorn disk", n)
		}
	}

	res, _ := r.mustUp(t, "second up", inv, Options{})
	onlySame(t, "second up", res.Changes)

	if len(pc.Nodes) > 1 {
		inv = r.inventory(t, nodes, "  longhorn: {replicas: 2}\n")
		res, _ = r.mustUp(t, "replicas 2", inv, Options{})
		if res.Changes["update"] != 1 || res.Changes["create"]+res.Changes["delete"]+res.Changes["replace"] > 0 {
			t.Errorf("changes %v, want the release alone updated", res.Changes)
		}
		r.wantRelease(t, longhorn.DefaultNamespace, "longhorn", "longhorn", longhorn.ChartVersion, 2)
	}

	inv = r.inventory(t, nodes, "")
	_, _, err = r.up(t, "up without Longhorn", inv, Options{})
	var refused *RemovalError
	if !errors.As(err, &refused) || len(refused.Removal.Deleted) != 0 ||
		!slices.Contains(refused.Removal.Kept, Removed{"longhorn", "Release", "longhorn-system/longhorn"}) {
		t.Fatalf("removal: %v", err)
	}
	r.mustUp(t, "up without Longhorn, confirmed", inv, Options{Confirm: func(Removal) error { return nil }})
	if rel := r.release(t, longhorn.DefaultNamespace, "longhorn"); rel == nil || rel.Status != helmDeployed {
		t.Errorf("Longhorn after leaving the inventory: %+v, want it still deployed", rel)
	}
}

// TestMetalLBWebhookNotAnswering: on the test control plane MetalLB's
// webhook never answers (kwok runs no pods; the service network goes
// nowhere), which is what a real cluster shows for the seconds after the
// controller is ready: the pool create fails with "failed calling
// webhook", rack probes the webhook for a bounded time, then reports the
// cause. The release itself installs, without frr-k8s (no BGP pool).
func TestMetalLBWebhookNotAnswering(t *testing.T) {
	r := newPlatRack(t, "webhook", "n1", "n2")
	ctx := context.Background()
	inv := r.inventory(t, platNodes, "  metallb:\n    pools:\n      - {name: lan, addresses: [10.99.1.10-10.99.1.20]}\n")
	policy := retryPolicy{budget: 6 * time.Second, poll: time.Second}
	_, progress, err := r.up(t, "up", inv, Options{webhookRetry: policy})
	if err == nil {
		t.Fatal("the pools were created although MetalLB's webhook cannot answer here")
	}
	for _, want := range []string{
		"did not answer within 6s",
		`the last probe: Internal error occurred: failed calling webhook "ipaddresspoolvalidationwebhook.metallb.io"`,
		`the last run: `,
		"metallb-system",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if n := strings.Count(progress, "MetalLB's webhook does not answer yet"); n != 1 {
		t.Errorf("%d waits noted, want 1 (the probe never answers):\n%s", n, progress)
	}
	if len(err.Error()) > 4000 {
		t.Errorf("the error carries the whole progress output (%d bytes)", len(err.Error()))
	}
	t.Logf("error after the retries:\n%v", err)
	r.wantRelease(t, metallb.DefaultNamespace, "metallb", "metallb", metallb.ChartVersion, 1)
	ds, err := r.cs.AppsV1().DaemonSets(metallb.DefaultNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ds.Items {
		names = append(names, d.Name)
	}
	if slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, "frr") }) || len(names) == 0 {
		t.Errorf("DaemonSets %v: want the speaker and no frr-k8s", names)
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
