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

// A server on embedded etcd counts as joined once k3s has named its etcd
// member on its Ready Node; without the names the wait fails, saying what
// is missing. Without etcdMember, Ready at the version is enough.
func TestWaitReadyEtcdMember(t *testing.T) {
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "etcd-3"}, Status: corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.33.5+k3s1"},
	}}
	cs := fake.NewSimpleClientset(node)
	if err := WaitReady(ctx, cs, "etcd-3", "v1.33.5+k3s1", false, time.Second); err != nil {
		t.Fatalf("a Ready Node at the version, no etcd member asked for: %v", err)
	}
	err := WaitReady(ctx, cs, "etcd-3", "v1.33.5+k3s1", true, 600*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), AnnotationEtcdName) || !strings.Contains(err.Error(), "etcd-3") {
		t.Fatalf("a Node without the etcd annotations: %v", err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		n, _ := cs.CoreV1().Nodes().Get(ctx, "etcd-3", metav1.GetOptions{})
		n.Annotations = map[string]string{AnnotationEtcdName: "etcd-3-5a1d3c8e", AnnotationEtcdAddress: "198.18.0.4"}
		_, _ = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	}()
	if err := WaitReady(ctx, cs, "etcd-3", "v1.33.5+k3s1", true, 5*time.Second); err != nil {
		t.Fatalf("annotations written after 300 ms: %v", err)
	}
	if err := WaitReady(ctx, cs, "etcd-3", "v1.34.1+k3s1", true, 600*time.Millisecond); err == nil || !strings.Contains(err.Error(), "runs v1.33.5+k3s1") {
		t.Errorf("a Node at another version: %v", err)
	}
	if err := WaitReady(ctx, cs, "gone", "", true, 600*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("a Node that does not exist: %v", err)
	}
}
