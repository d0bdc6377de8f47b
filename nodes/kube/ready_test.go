package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A server's Node counts as joined once k3s has named its etcd member on
// it; a Node without the names makes the wait fail, saying what is missing.
func TestWaitEtcdMember(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewSimpleClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "etcd-3"}})
	err := WaitEtcdMember(ctx, cs, "etcd-3", 400*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), AnnotationEtcdName) || !strings.Contains(err.Error(), "etcd-3") {
		t.Fatalf("a Node without the etcd annotations: %v", err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		n, _ := cs.CoreV1().Nodes().Get(ctx, "etcd-3", metav1.GetOptions{})
		n.Annotations = map[string]string{AnnotationEtcdName: "etcd-3-5a1d3c8e", AnnotationEtcdAddress: "198.18.0.4"}
		_, _ = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	}()
	if err := WaitEtcdMember(ctx, cs, "etcd-3", 5*time.Second); err != nil {
		t.Fatalf("annotations written after 300 ms: %v", err)
	}
	if err := WaitEtcdMember(ctx, cs, "gone", 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("a Node that does not exist: %v", err)
	}
}
