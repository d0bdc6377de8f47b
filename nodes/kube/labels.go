package kube

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	kubeletapis "k8s.io/kubelet/pkg/apis"

	"github.com/homelab/rack/inventory"
)

// The annotations in which rack records the labels and taints it manages on
// a Node, so that one removed from the inventory is removed from the Node,
// while labels and taints others set (k3s' node roles, a cordon, the node
// controller's) are never touched.
const (
	AnnotationLabels = "rack.homelab/labels"
	AnnotationTaints = "rack.homelab/taints"
)

// KubeletMaySet reports whether a kubelet may set the label on its own Node:
// the NodeRestriction admission plugin (on in k3s) refuses labels under
// kubernetes.io and k8s.io except a fixed set, and the kubelet refuses to
// start with them in --node-labels. node-role.kubernetes.io/worker is the
// usual case. Such labels go on the Node through the API instead.
func KubeletMaySet(key string) bool {
	ns, _, ok := strings.Cut(key, "/")
	if !ok {
		return true
	}
	restricted := ns == "kubernetes.io" || ns == "k8s.io" || strings.HasSuffix(ns, ".kubernetes.io") || strings.HasSuffix(ns, ".k8s.io")
	return !restricted || kubeletapis.IsKubeletLabel(key)
}

// Want is what a Node should carry of what rack manages.
type Want struct {
	Labels map[string]string
	Taints []inventory.Taint
}

// Changes are the differences between a Node and Want, as data.
type Changes struct {
	SetLabels    map[string]string
	RemoveLabels []string
	AddTaints    []inventory.Taint
	RemoveTaints []inventory.Taint
}

// None reports whether there is nothing to change.
func (c Changes) None() bool {
	return len(c.SetLabels) == 0 && len(c.RemoveLabels) == 0 && len(c.AddTaints) == 0 && len(c.RemoveTaints) == 0
}

// String describes the changes for a plan ("set disk=ssd; remove label x; add taint …").
func (c Changes) String() string {
	var parts []string
	keys := make([]string, 0, len(c.SetLabels))
	for k := range c.SetLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, "label "+k+"="+c.SetLabels[k])
	}
	for _, k := range c.RemoveLabels {
		parts = append(parts, "remove label "+k)
	}
	for _, t := range c.AddTaints {
		parts = append(parts, "taint "+t.String())
	}
	for _, t := range c.RemoveTaints {
		parts = append(parts, "remove taint "+t.String())
	}
	return strings.Join(parts, ", ")
}

// Diff compares a Node with what rack wants on it. Only labels and taints rack
// recorded as its own (or wants now) are ever removed. Pure.
func Diff(n *corev1.Node, w Want) Changes {
	c := Changes{SetLabels: map[string]string{}}
	for k, v := range w.Labels {
		if cur, ok := n.Labels[k]; !ok || cur != v {
			c.SetLabels[k] = v
		}
	}
	for _, k := range splitList(n.Annotations[AnnotationLabels]) {
		if _, still := w.Labels[k]; !still {
			if _, present := n.Labels[k]; present {
				c.RemoveLabels = append(c.RemoveLabels, k)
			}
		}
	}
	sort.Strings(c.RemoveLabels)
	has := func(t inventory.Taint) bool {
		return slices.ContainsFunc(n.Spec.Taints, func(x corev1.Taint) bool {
			return x.Key == t.Key && x.Value == t.Value && string(x.Effect) == t.Effect
		})
	}
	for _, t := range w.Taints {
		if !has(t) {
			c.AddTaints = append(c.AddTaints, t)
		}
	}
	for _, s := range splitList(n.Annotations[AnnotationTaints]) {
		t, err := inventory.ParseTaint(s)
		if err != nil || slices.Contains(w.Taints, t) {
			continue
		}
		// A recorded taint whose value changed is replaced: same key and effect.
		if has(t) || slices.ContainsFunc(n.Spec.Taints, func(x corev1.Taint) bool { return x.Key == t.Key && string(x.Effect) == t.Effect }) {
			c.RemoveTaints = append(c.RemoveTaints, t)
		}
	}
	if len(c.SetLabels) == 0 {
		c.SetLabels = nil
	}
	return c
}

// Reconcile makes the Node carry w: it sets and removes labels and taints
// through the API (a kubelet applies --node-labels and --register-with-taints
// only when it first registers, so a later change never reaches the Node by
// itself) and records what rack manages. Conflicts with other writers (the
// node controller, kwok) are retried.
func Reconcile(ctx context.Context, cs kubernetes.Interface, name string, w Want) (Changes, error) {
	for attempt := 0; ; attempt++ {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return Changes{}, fmt.Errorf("node %s: %w", name, err)
		}
		c := Diff(n, w)
		wantLabels, wantTaints := recordLabels(w), recordTaints(w)
		if c.None() && n.Annotations[AnnotationLabels] == wantLabels && n.Annotations[AnnotationTaints] == wantTaints {
			return c, nil
		}
		n = n.DeepCopy()
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		for k, v := range c.SetLabels {
			n.Labels[k] = v
		}
		for _, k := range c.RemoveLabels {
			delete(n.Labels, k)
		}
		var taints []corev1.Taint
		for _, t := range n.Spec.Taints {
			if !slices.ContainsFunc(c.RemoveTaints, func(r inventory.Taint) bool { return r.Key == t.Key && string(t.Effect) == r.Effect }) {
				taints = append(taints, t)
			}
		}
		for _, t := range c.AddTaints {
			taints = slices.DeleteFunc(taints, func(x corev1.Taint) bool { return x.Key == t.Key && string(x.Effect) == t.Effect })
			taints = append(taints, corev1.Taint{Key: t.Key, Value: t.Value, Effect: corev1.TaintEffect(t.Effect)})
		}
		n.Spec.Taints = taints
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[AnnotationLabels], n.Annotations[AnnotationTaints] = wantLabels, wantTaints
		_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{FieldManager: "rack"})
		if apierrors.IsConflict(err) && attempt < 10 {
			continue
		}
		if err != nil {
			return c, fmt.Errorf("node %s: setting labels and taints: %w", name, err)
		}
		return c, nil
	}
}

func recordLabels(w Want) string {
	keys := make([]string, 0, len(w.Labels))
	for k := range w.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func recordTaints(w Want) string {
	s := make([]string, len(w.Taints))
	for i, t := range w.Taints {
		s[i] = t.String()
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
