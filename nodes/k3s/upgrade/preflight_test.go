package upgrade

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s/catalog"
	"github.com/homelab/rack/nodes/kube"
)

func readyNode(name string) corev1.Node {
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
}

func TestPreflight(t *testing.T) {
	plan := Plan{From: "v1.33.5+k3s1", To: "v1.35.6+k3s1", Steps: []Step{
		{Version: "v1.34.9+k3s1", Nodes: []string{"srv", "wrk"}, Servers: 1},
		{Version: "v1.35.6+k3s1", Nodes: []string{"srv", "wrk"}, Servers: 1},
	}}
	v1 := nodes.Facts{CgroupVersion: 1}
	v2 := nodes.Facts{CgroupVersion: 2}
	allowed := "token: x\nkubelet-arg:\n- fail-cgroupv1=false\n"
	base := func() State {
		return State{Nodes: []corev1.Node{readyNode("srv"), readyNode("wrk")}, Inventory: map[string]bool{"srv": true, "wrk": true},
			Facts: map[string]nodes.Facts{"srv": v2, "wrk": v2}}
	}
	drained := map[string]bool{"srv": true, "wrk": true}
	pdb := policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec:   policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
		Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: 0, CurrentHealthy: 2, DesiredHealthy: 2}}
	webPod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default", Labels: map[string]string{"app": "web"}}, Spec: corev1.PodSpec{NodeName: "wrk"}}
	widget := StoredObject{API: catalog.RemovedAPI{Group: "example.com", Version: "v1beta1", Kind: "Widget", Replacement: "example.com/v1"}, Minor: "1.35", Object: "default/old"}

	cases := []struct {
		name      string
		edit      func(*State)
		blocking  []string // checks refused without --force
		forced    []string // checks still refused with --force
		messages  []string
		notBlocks bool
	}{
		{"clean", func(*State) {}, nil, nil, nil, true},
		{"not ready", func(s *State) { s.Nodes[1].Status.Conditions[0].Status = corev1.ConditionFalse },
			[]string{CheckReady}, []string{CheckReady}, []string{"wrk is not Ready"}, false},
		{"cordoned by hand", func(s *State) { s.Nodes[1].Spec.Unschedulable = true },
			[]string{CheckCordoned}, []string{CheckCordoned}, []string{"wrk is cordoned by someone else", "rack node uncordon wrk"}, false},
		{"cordoned by rack node drain", func(s *State) {
			s.Nodes[1].Spec.Unschedulable = true
			s.Nodes[1].Annotations = map[string]string{kube.AnnotationCordonedBy: kube.CordonedByDrain}
		}, []string{CheckCordoned}, []string{CheckCordoned}, []string{"cordoned by rack node drain"}, false},
		{"cordoned by an interrupted upgrade, even not Ready", func(s *State) {
			s.Nodes[1].Spec.Unschedulable = true
			s.Nodes[1].Annotations = map[string]string{kube.AnnotationCordonedBy: kube.CordonedByUpgrade}
			s.Nodes[1].Status.Conditions[0].Status = corev1.ConditionUnknown
		}, nil, nil, []string{"interrupted rack upgrade apply"}, true},
		{"not in the inventory", func(s *State) { s.Nodes = append(s.Nodes, readyNode("stray")) },
			[]string{CheckInventory}, []string{CheckInventory}, []string{"stray is in the cluster but not in the inventory"}, false},
		{"PDB allows nothing", func(s *State) { s.PDBs = []policyv1.PodDisruptionBudget{pdb}; s.Pods = []corev1.Pod{webPod} },
			[]string{CheckPDB}, nil, []string{"PDB default/web allows 0 disruption(s) now (2 healthy, 2 needed); it guards pods on wrk"}, false},
		{"PDB allows one", func(s *State) {
			p := pdb
			p.Status.DisruptionsAllowed = 1
			s.PDBs = []policyv1.PodDisruptionBudget{p}
			s.Pods = []corev1.Pod{webPod}
		}, nil, nil, []string{"allows 1 disruption(s)"}, true},
		{"longhorn degraded", func(s *State) {
			s.LonghornInstalled = true
			s.Longhorn = []LonghornVolume{{Name: "pvc-1", State: "attached", Robustness: "degraded"}, {Name: "pvc-2", State: "detached", Robustness: "unknown"}}
		}, []string{CheckLonghorn}, nil, []string{"Longhorn volume pvc-1 is degraded"}, false},
		{"longhorn healthy", func(s *State) {
			s.LonghornInstalled = true
			s.Longhorn = []LonghornVolume{{Name: "pvc-1", State: "attached", Robustness: "healthy"}}
		}, nil, nil, []string{"every attached one healthy"}, true},
		{"cgroup v1 to 1.35", func(s *State) { s.Facts["wrk"] = v1 },
			[]string{CheckCgroup}, []string{CheckCgroup}, []string{"wrk runs on cgroup v1", "k3s v1.35.6+k3s1", "unified cgroup hierarchy", FailCgroupV1Arg}, false},
		{"cgroup v1, inventory has the arg, node not yet", func(s *State) { s.Facts["wrk"] = v1; s.InventoryArgs = []string{FailCgroupV1Arg} },
			[]string{CheckCgroup}, []string{CheckCgroup}, []string{"run rack up --nodes-only first"}, false},
		{"cgroup v1 allowed by the node's config", func(s *State) {
			f := v1
			f.K3sConfig = allowed
			s.Facts["wrk"] = f
		}, nil, nil, nil, true},
		{"removed API", func(s *State) { s.Stored = []StoredObject{widget} },
			[]string{CheckRemovedAPI}, nil, []string{"Widget default/old was written under example.com/v1beta1, which k3s 1.35 no longer serves"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := base()
			tc.edit(&st)
			fs := Preflight(plan, st, drained)
			checks := func(force bool) []string {
				var out []string
				for _, f := range Blocking(fs, force) {
					out = append(out, f.Check)
				}
				return out
			}
			if got := strings.Join(checks(false), ","); got != strings.Join(tc.blocking, ",") {
				t.Errorf("blocking %q, want %q: %+v", got, tc.blocking, fs)
			}
			if got := strings.Join(checks(true), ","); got != strings.Join(tc.forced, ",") {
				t.Errorf("blocking with --force %q, want %q", got, tc.forced)
			}
			var all strings.Builder
			for _, f := range fs {
				all.WriteString(f.Message + " | " + f.Fix + "\n")
				if f.Blocks && f.Fix == "" {
					t.Errorf("a refusal without a fix: %+v", f)
				}
			}
			for _, m := range tc.messages {
				if !strings.Contains(all.String(), m) {
					t.Errorf("findings lack %q:\n%s", m, all.String())
				}
			}
		})
	}
	// 1.34 alone does not meet the cgroup v1 rule.
	st := base()
	st.Facts["wrk"] = v1
	short := Plan{Steps: plan.Steps[:1]}
	if b := Blocking(Preflight(short, st, drained), false); len(b) != 0 {
		t.Errorf("a step to 1.34 on cgroup v1 refused: %+v", b)
	}
}

func TestWrittenUnder(t *testing.T) {
	if !writtenUnder(nil, "example.com/v1beta1") {
		t.Error("no managedFields: cannot tell, so counted")
	}
	mf := []metav1.ManagedFieldsEntry{{Manager: "kubectl", APIVersion: "example.com/v1"}}
	if writtenUnder(mf, "example.com/v1beta1") {
		t.Error("written under v1 only")
	}
	mf = append(mf, metav1.ManagedFieldsEntry{Manager: "old-tool", APIVersion: "example.com/v1beta1"})
	if !writtenUnder(mf, "example.com/v1beta1") {
		t.Error("written under v1beta1 too")
	}
}

func TestAllowsCgroupV1(t *testing.T) {
	for cfg, want := range map[string]bool{
		"kubelet-arg: fail-cgroupv1=false\n":                 true,
		"kubelet-arg: [max-pods=200, --fail-cgroupv1=false]": true,
		"kubelet-arg: [max-pods=200]\n":                      false,
		"token: x\n":                                         false,
		"not: [yaml":                                         false,
	} {
		if got := allowsCgroupV1(cfg); got != want {
			t.Errorf("%q: %v, want %v", cfg, got, want)
		}
	}
}
