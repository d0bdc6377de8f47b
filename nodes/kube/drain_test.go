package kube

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/homelab/rack/internal/testenv"
)

func TestNewDrainerOptions(t *testing.T) {
	d := NewDrainer(context.Background(), nil, DrainOptions{Timeout: time.Minute, Force: true, DeleteEmptyDirData: true, GracePeriod: 30})
	if !d.IgnoreAllDaemonSets || d.DisableEviction || !d.Force || !d.DeleteEmptyDirData || d.GracePeriodSeconds != 30 || d.Timeout != time.Minute || d.EvictErrorRetryDelay != DefaultEvictRetry {
		t.Fatalf("drainer %+v", d)
	}
	d = NewDrainer(context.Background(), nil, DrainOptions{GracePeriod: -1, RetryDelay: time.Second})
	if d.Force || d.DeleteEmptyDirData || d.GracePeriodSeconds != -1 || d.Timeout != 0 || d.EvictErrorRetryDelay != time.Second {
		t.Fatalf("defaults %+v", d)
	}
}

func TestCordonedBy(t *testing.T) {
	n := &corev1.Node{}
	if CordonedBy(n) != "" {
		t.Error("schedulable node")
	}
	n.Spec.Unschedulable = true
	if CordonedBy(n) != CordonedElsewhere {
		t.Error("cordon without rack's annotation")
	}
	n.Annotations = map[string]string{AnnotationCordonedBy: CordonedByUpgrade}
	if CordonedBy(n) != CordonedByUpgrade {
		t.Error("rack's cordon")
	}
	n.Spec.Unschedulable = false
	if CordonedBy(n) != "" {
		t.Error("a stale annotation on a schedulable node means nothing")
	}
}

// fakeCluster is a node with pods: web-1 and web-2 of a ReplicaSet under a
// PDB, a DaemonSet pod, and the Eviction API played by a reactor that
// refuses (429) while the budget allows nothing.
type fakeCluster struct {
	cs      *fake.Clientset
	mu      sync.Mutex
	allowed int32
	evicted []string
}

func newFakeCluster(t *testing.T, extra ...runtime.Object) *fakeCluster {
	t.Helper()
	ctrl := true
	pod := func(name, kind string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: "wrk"}}
		if kind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: "owner", Controller: &ctrl}}
		}
		return p
	}
	ds := pod("logs-abcde", "DaemonSet")
	ds.Labels = map[string]string{"app": "logs"}
	objs := []runtime.Object{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "wrk"}},
		pod("web-1", "ReplicaSet"), pod("web-2", "ReplicaSet"), ds,
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "owner", Namespace: "default"}},
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
			Spec:   policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr(intstr.FromInt32(2)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
			Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: 0, CurrentHealthy: 2, DesiredHealthy: 2}},
	}
	f := &fakeCluster{cs: fake.NewClientset(append(objs, extra...)...)}
	f.cs.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{GroupVersion: "v1",
		APIResources: []metav1.APIResource{{Name: "pods/eviction", Kind: "Eviction", Group: "policy", Version: "v1"}}}}
	f.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		name := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction).Name
		f.mu.Lock()
		defer f.mu.Unlock()
		if strings.HasPrefix(name, "web-") && f.allowed < 1 {
			return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
		}
		f.evicted = append(f.evicted, name)
		err := f.cs.Tracker().Delete(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, "default", name)
		return true, nil, err
	})
	return f
}

func ptr[T any](v T) *T { return &v }

func (f *fakeCluster) allow(n int32) {
	f.mu.Lock()
	f.allowed = n
	f.mu.Unlock()
}

// A budget that allows nothing holds the drain up, visibly; once it allows
// disruptions the drain finishes. The DaemonSet pod stays.
func TestDrainWaitsOnPDB(t *testing.T) {
	f := newFakeCluster(t)
	var out testenv.Buffer
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.allow(2)
	}()
	rep, err := Drain(context.Background(), f.cs, "wrk", DrainOptions{Timeout: time.Minute, GracePeriod: -1, RetryDelay: 50 * time.Millisecond, Out: &out})
	if err != nil {
		t.Fatalf("drain: %v\n%s", err, out.String())
	}
	if strings.Join(rep.Evicted, ",") != "default/web-1,default/web-2" {
		t.Errorf("evicted %v", rep.Evicted)
	}
	for _, want := range []string{"node wrk cordoned", "evicting pod default/web-1", "waiting on PDB web: 0 disruptions allowed (2 healthy, 2 needed)", "pod default/web-2 evicted", "node wrk drained"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := f.cs.CoreV1().Pods("default").Get(context.Background(), "logs-abcde", metav1.GetOptions{}); err != nil {
		t.Errorf("the DaemonSet pod was touched: %v", err)
	}
	n, _ := f.cs.CoreV1().Nodes().Get(context.Background(), "wrk", metav1.GetOptions{})
	if !n.Spec.Unschedulable || n.Annotations[AnnotationCordonedBy] != CordonedByDrain {
		t.Errorf("node after the drain: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}
	if err := Uncordon(context.Background(), f.cs, "wrk"); err != nil {
		t.Fatal(err)
	}
	n, _ = f.cs.CoreV1().Nodes().Get(context.Background(), "wrk", metav1.GetOptions{})
	if n.Spec.Unschedulable || n.Annotations[AnnotationCordonedBy] != "" {
		t.Errorf("node after uncordon: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}
}

// A drain that times out says which pods and budgets held it, and leaves
// the node cordoned.
func TestDrainTimesOutCordoned(t *testing.T) {
	f := newFakeCluster(t)
	var out testenv.Buffer
	_, err := Drain(context.Background(), f.cs, "wrk", DrainOptions{Timeout: 300 * time.Millisecond, GracePeriod: -1, RetryDelay: 50 * time.Millisecond, By: CordonedByUpgrade, Out: &out})
	if err == nil {
		t.Fatal("the drain finished although the budget allows nothing")
	}
	for _, want := range []string{"node wrk was not drained within 300ms (--timeout)", "default/web-1 (PDB web: 0 disruptions allowed", "it stays cordoned", "rack node uncordon wrk"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	n, _ := f.cs.CoreV1().Nodes().Get(context.Background(), "wrk", metav1.GetOptions{})
	if !n.Spec.Unschedulable || n.Annotations[AnnotationCordonedBy] != CordonedByUpgrade {
		t.Errorf("node after the timeout: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}
}

// A pod no controller manages is refused without --force, and nothing changes.
func TestDrainRefusesUnmanagedPodWithoutForce(t *testing.T) {
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: "default", UID: "uid-bare"}, Spec: corev1.PodSpec{NodeName: "wrk"}}
	f := newFakeCluster(t, bare)
	f.allow(2)
	_, err := Drain(context.Background(), f.cs, "wrk", DrainOptions{GracePeriod: -1, RetryDelay: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), "default/bare") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("want a refusal naming the pod and --force, got %v", err)
	}
	n, _ := f.cs.CoreV1().Nodes().Get(context.Background(), "wrk", metav1.GetOptions{})
	if n.Spec.Unschedulable {
		t.Error("a refused drain cordoned the node")
	}
	if _, err := Drain(context.Background(), f.cs, "wrk", DrainOptions{Force: true, GracePeriod: -1, RetryDelay: 50 * time.Millisecond}); err != nil {
		t.Fatalf("--force: %v", err)
	}
	if _, err := Drain(context.Background(), f.cs, "nope", DrainOptions{}); err == nil || !strings.Contains(err.Error(), "node nope is not in the cluster") {
		t.Fatalf("unknown node: %v", err)
	}
}
