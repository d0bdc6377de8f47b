// Package apptest holds helpers for tests that run apps on the test API
// server (internal/testcluster), where kwok plays every kubelet.
package apptest

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/util/podutils"
)

// Unready is the annotation of a pod a test made unready on purpose:
// KeepReady leaves it alone.
const Unready = "apptest.rack.homelab/unready"

// KeepReady plays the kubelet kwok does not: when a loaded machine delays
// kwok's node heartbeats, the node lifecycle controller marks every pod of
// the node not ready, and kwok only ever readies pods that are still
// Pending, so they would stay unready for good. Until the test ends, every
// Running pod of namespace that is not ready (and not annotated Unready)
// is made ready again, as a kubelet whose probes pass would.
func KeepReady(t testing.TB, cs kubernetes.Interface, namespace string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				continue
			}
			for i := range pods.Items {
				p := &pods.Items[i]
				if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Annotations[Unready] != "" || podutils.IsPodReady(p) {
					continue
				}
				now := metav1.Now()
				for j := range p.Status.Conditions {
					if c := &p.Status.Conditions[j]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
						c.Status, c.LastTransitionTime = corev1.ConditionTrue, now
					}
				}
				for j := range p.Status.ContainerStatuses {
					p.Status.ContainerStatuses[j].Ready = true
				}
				_, _ = cs.CoreV1().Pods(namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			}
		}
	}()
}

// MakeUnready marks pod not ready, as a kubelet whose readiness probe fails
// would, and keeps KeepReady from undoing it.
func MakeUnready(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) error {
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[Unready] = "true"
	updated, err := cs.CoreV1().Pods(p.Namespace).Update(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	for j := range updated.Status.Conditions {
		if c := &updated.Status.Conditions[j]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			c.Status, c.LastTransitionTime = corev1.ConditionFalse, metav1.Now()
		}
	}
	for j := range updated.Status.ContainerStatuses {
		updated.Status.ContainerStatuses[j].Ready = false
	}
	_, err = cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	return err
}
