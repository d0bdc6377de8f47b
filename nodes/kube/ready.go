package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NodeReady reports whether a Node has condition Ready=True.
func NodeReady(n *corev1.Node) bool {
	c := readyCondition(n)
	return c != nil && c.Status == corev1.ConditionTrue
}

func readyCondition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// WaitReady waits until the Node is registered, Ready and runs version. A
// restarted node stays Ready from before its restart for a while, so only
// the new version proves the new config took effect. With etcdMember (a
// server on embedded etcd) it also waits until k3s has named the server's
// etcd member on the Node, which k3s does a moment after the Node
// registers: until then k3s cannot remove that member when the Node is
// deleted (it keeps the Node's finalizer for good), so a removal or rebuild
// right after would hang.
func WaitReady(ctx context.Context, cs kubernetes.Interface, name, version string, etcdMember bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "not registered with the API server yet"
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			ready := NodeReady(n)
			named := n.Annotations[AnnotationEtcdName] != "" && n.Annotations[AnnotationEtcdAddress] != ""
			switch {
			case !ready || (version != "" && n.Status.NodeInfo.KubeletVersion != version):
				last = describeNode(n, ready, version)
			case etcdMember && !named:
				last = "Ready, but k3s has not named its etcd member on it yet (" + AnnotationEtcdName + ", " + AnnotationEtcdAddress + ")"
			default:
				return nil
			}
		case apierrors.IsNotFound(err):
			last = "not registered with the API server yet"
		case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		default:
			last = "API server: " + err.Error()
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("node %s did not become Ready within %s: %s; look at the k3s log on the node (journalctl -u k3s or k3s-agent)", name, timeout, last)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func describeNode(n *corev1.Node, ready bool, version string) string {
	if ready {
		return fmt.Sprintf("Ready but runs %s, not %s", n.Status.NodeInfo.KubeletVersion, version)
	}
	if c := readyCondition(n); c != nil {
		return fmt.Sprintf("Ready=%s (%s: %s)", c.Status, c.Reason, c.Message)
	}
	return "registered, no Ready condition yet"
}

// The annotations k3s' etcd metadata controller puts on a server's Node:
// its etcd member's name and peer address. k3s removes the member of a
// deleted Node through them; without them it keeps the Node's finalizer.
const (
	AnnotationEtcdName    = "etcd.k3s.cattle.io/node-name"
	AnnotationEtcdAddress = "etcd.k3s.cattle.io/node-address"
)
