package kube

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/inventory"
)

func TestKubeletMaySet(t *testing.T) {
	for key, want := range map[string]bool{
		"disk":                                true,
		"example.com/gpu":                     true,
		"topology.kubernetes.io/zone":         true,
		"kubernetes.io/hostname":              true,
		"node.kubernetes.io/instance-type":    true,
		"kubelet.kubernetes.io/anything":      true,
		"node-role.kubernetes.io/worker":      false,
		"kubernetes.io/role":                  false,
		"k8s.io/thing":                        false,
		"foo.k8s.io/bar":                      false,
		"node-restriction.kubernetes.io/pool": false,
	} {
		if got := KubeletMaySet(key); got != want {
			t.Errorf("KubeletMaySet(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestDiff(t *testing.T) {
	node := func(labels, annotations map[string]string, taints ...corev1.Taint) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations}, Spec: corev1.NodeSpec{Taints: taints}}
	}
	gpu := inventory.Taint{Key: "gpu", Value: "yes", Effect: "NoSchedule"}
	cases := []struct {
		name string
		node *corev1.Node
		want Want
		diff Changes
	}{
		{"nothing", node(map[string]string{"a": "1"}, nil), Want{Labels: map[string]string{"a": "1"}}, Changes{}},
		{"new and changed", node(map[string]string{"a": "1"}, nil), Want{Labels: map[string]string{"a": "2", "b": "x"}},
			Changes{SetLabels: map[string]string{"a": "2", "b": "x"}}},
		{"removed from the inventory", node(map[string]string{"a": "1", "b": "2", "k3s": "keep"}, map[string]string{AnnotationLabels: "a,b"}),
			Want{Labels: map[string]string{"a": "1"}}, Changes{RemoveLabels: []string{"b"}}},
		{"not rack's: left alone", node(map[string]string{"node-role.kubernetes.io/control-plane": "true"}, nil), Want{}, Changes{}},
		{"taint added", node(nil, nil), Want{Taints: []inventory.Taint{gpu}}, Changes{AddTaints: []inventory.Taint{gpu}}},
		{"taint removed, cordon kept", node(nil, map[string]string{AnnotationTaints: "gpu=yes:NoSchedule"},
			corev1.Taint{Key: "gpu", Value: "yes", Effect: "NoSchedule"}, corev1.Taint{Key: "node.kubernetes.io/unschedulable", Effect: "NoSchedule"}),
			Want{}, Changes{RemoveTaints: []inventory.Taint{gpu}}},
		{"taint value changed", node(nil, map[string]string{AnnotationTaints: "gpu=no:NoSchedule"}, corev1.Taint{Key: "gpu", Value: "no", Effect: "NoSchedule"}),
			Want{Taints: []inventory.Taint{gpu}}, Changes{AddTaints: []inventory.Taint{gpu}, RemoveTaints: []inventory.Taint{{Key: "gpu", Value: "no", Effect: "NoSchedule"}}}},
	}
	for _, tc := range cases {
		got := Diff(tc.node, tc.want)
		if !reflect.DeepEqual(got, tc.diff) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.diff)
		}
	}
}
