package apptest

import (
	"context"
	"sort"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/internal/testcluster"
)

// NodeName is the one Node Prepare registers (kwok plays its kubelet).
const NodeName = "kwok-1"

// Prepare readies a test control plane for apps: Traefik's CRDs, one Node
// kwok keeps Ready, and the apps' pods kept ready (KeepReady). It returns
// a dynamic client for the CRD objects.
func Prepare(ctx context.Context, t testing.TB, c *testcluster.Cluster) dynamic.Interface {
	t.Helper()
	srv, err := addontest.NewServer(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.InstallTraefikCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	cs := c.Clientset()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{
		"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	KeepReady(t, cs, apps.DefaultNamespace)
	return srv.Dynamic()
}

// Weights reads the TraefikService name's weights: backend Service -> weight.
func Weights(t testing.TB, dyn dynamic.Interface, name string) map[string]int64 {
	t.Helper()
	gvr := schema.GroupVersionResource{Group: "traefik.io", Version: "v1alpha1", Resource: "traefikservices"}
	ts, err := dyn.Resource(gvr).Namespace(apps.DefaultNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ws, _, _ := unstructured.NestedSlice(ts.Object, "spec", "weighted", "services")
	out := map[string]int64{}
	for _, w := range ws {
		m := w.(map[string]any)
		out[m["name"].(string)] = m["weight"].(int64)
	}
	return out
}

// Deployments lists the apps' Deployments not being deleted, sorted, each
// as "name=image" with the image as image(…) shortens it.
func Deployments(t testing.TB, cs kubernetes.Interface, image func(string) string) []string {
	t.Helper()
	list, err := cs.AppsV1().Deployments(apps.DefaultNamespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range list.Items {
		if d.DeletionTimestamp == nil {
			out = append(out, d.Name+"="+image(d.Spec.Template.Spec.Containers[0].Image))
		}
	}
	sort.Strings(out)
	return out
}
