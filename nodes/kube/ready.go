package kube

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NodeReady reports whether a Node has condition Ready=True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WaitReady waits until the Node is registered, Ready, runs version and
// carries labels. A restarted node stays Ready from before its restart for a
// while, so only the new version and labels prove the new config took effect.
func WaitReady(ctx context.Context, cs kubernetes.Interface, name, version string, labels map[string]string, timeout time.Duration) error {
	last, err := pollNode(ctx, cs, name, timeout, 500*time.Millisecond, func(n *corev1.Node) (bool, string) {
		ready := NodeReady(n)
		missing := missingLabels(n, labels)
		if ready && (version == "" || n.Status.NodeInfo.KubeletVersion == version) && missing == "" {
			return true, ""
		}
		if ready && missing != "" {
			return false, "Ready, but without label(s) " + missing
		}
		return false, describeNode(n, ready, version)
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("node %s did not become Ready within %s: %s; look at the k3s log on the node (journalctl -u k3s or k3s-agent)", name, timeout, last)
	}
	return err
}

// pollNode reads the Node every interval until done accepts it, and
// returns the last reason done (or the API) gave for waiting on; the error
// is the context's when timeout or ctx ends first.
func pollNode(ctx context.Context, cs kubernetes.Interface, name string, timeout, every time.Duration, done func(*corev1.Node) (bool, string)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "not registered with the API server yet"
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			ok, why := done(n)
			if ok {
				return "", nil
			}
			last = why
		case apierrors.IsNotFound(err):
			last = "not registered with the API server yet"
		case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		default:
			last = "API server: " + err.Error()
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-tick.C:
		}
	}
}

func describeNode(n *corev1.Node, ready bool, version string) string {
	if ready {
		return fmt.Sprintf("Ready but runs %s, not %s", n.Status.NodeInfo.KubeletVersion, version)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return fmt.Sprintf("Ready=%s (%s: %s)", c.Status, c.Reason, c.Message)
		}
	}
	return "registered, no Ready condition yet"
}

func missingLabels(n *corev1.Node, want map[string]string) string {
	var out []string
	for k, v := range want {
		if n.Labels[k] != v {
			out = append(out, k+"="+v)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// The annotations k3s' etcd metadata controller puts on a server's Node:
// its etcd member's name and peer address. k3s removes the member of a
// deleted Node through them; without them it keeps the Node's finalizer.
const (
	AnnotationEtcdName    = "etcd.k3s.cattle.io/node-name"
	AnnotationEtcdAddress = "etcd.k3s.cattle.io/node-address"
)

// WaitEtcdMember waits until a server's Node carries the etcd member
// annotations, which k3s writes shortly after the Node registers.
func WaitEtcdMember(ctx context.Context, cs kubernetes.Interface, name string, timeout time.Duration) error {
	last, err := pollNode(ctx, cs, name, timeout, 250*time.Millisecond, func(n *corev1.Node) (bool, string) {
		if n.Annotations[AnnotationEtcdName] != "" && n.Annotations[AnnotationEtcdAddress] != "" {
			return true, ""
		}
		return false, "Ready, but without " + AnnotationEtcdName + " and " + AnnotationEtcdAddress
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("node %s: k3s did not name its etcd member on the Node within %s (%s): its etcd member controller has not seen it; look at the k3s log on the node (journalctl -u k3s)", name, timeout, last)
	}
	return err
}
