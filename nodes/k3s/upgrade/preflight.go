package upgrade

import (
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s/catalog"
	"github.com/homelab/rack/nodes/kube"
)

// Checks the pre-flight runs, as Finding.Check names them.
const (
	CheckReady      = "ready"
	CheckCordoned   = "cordoned"
	CheckInventory  = "inventory"
	CheckPDB        = "pdb"
	CheckLonghorn   = "longhorn"
	CheckCgroup     = "cgroup"
	CheckRemovedAPI = "removed-api"
)

// Finding is one pre-flight result. A blocking finding refuses the upgrade
// before anything changes; --force overrides the Forceable ones (objects
// under removed APIs, PodDisruptionBudgets that allow no disruption now,
// Longhorn volumes that are not healthy), never the others.
type Finding struct {
	Check     string `json:"check"`
	Node      string `json:"node,omitempty"`
	Object    string `json:"object,omitempty"`
	Message   string `json:"message"`
	Fix       string `json:"fix,omitempty"`
	Blocks    bool   `json:"blocks"`
	Forceable bool   `json:"forceable,omitempty"`
}

// CgroupV1Minor is the first minor whose kubelet refuses to start on a
// cgroup v1 host unless its configuration sets failCgroupV1: false.
var CgroupV1Minor = inventory.K3sMinor{Major: 1, Minor: 35}

// FailCgroupV1Arg is the cluster.k3s.args entry that lets k3s ≥ 1.35 run on cgroup v1.
const FailCgroupV1Arg = "--kubelet-arg=fail-cgroupv1=false"

// LonghornVolume is a longhorn.io Volume as the pre-flight reads it.
type LonghornVolume struct {
	Name       string
	State      string // attached, detached, …
	Robustness string // healthy, degraded, faulted, unknown
}

// StoredObject is an object readable under an API version a minor on the
// path removes, and written under it (its managedFields say so, or say
// nothing).
type StoredObject struct {
	API    catalog.RemovedAPI
	Minor  string // the minor that removes it
	Object string // namespace/name or name
}

// State is the cluster as the pre-flight judges it; gathering it is the
// executor's (Gather), judging it is pure (Preflight).
type State struct {
	Nodes []corev1.Node
	// Inventory names the nodes the inventory lists.
	Inventory map[string]bool
	PDBs      []policyv1.PodDisruptionBudget
	Pods      []corev1.Pod
	// Longhorn is nil when Longhorn is not installed.
	Longhorn []LonghornVolume
	// LonghornInstalled tells nil apart from "installed, no volume".
	LonghornInstalled bool
	Stored            []StoredObject
	// Facts of the nodes the plan upgrades, by name.
	Facts map[string]nodes.Facts
	// InventoryArgs are cluster.k3s.args.
	InventoryArgs []string
}

// Preflight judges the state against the plan: every node Ready (but one an
// interrupted run cordoned), none cordoned but by rack's upgrade, every node
// in the inventory (rack reaches nodes through it), what the
// PodDisruptionBudgets allow, Longhorn volumes healthy, no cgroup v1 host
// going to k3s ≥ 1.35 without failCgroupV1: false, and no object written
// under an API version a minor on the path removes. Pure.
func Preflight(plan Plan, st State, drained map[string]bool) []Finding {
	var out []Finding
	add := func(f Finding) { out = append(out, f) }
	for _, n := range st.Nodes {
		by := kube.CordonedBy(&n)
		resuming := by == kube.CordonedByUpgrade
		if !kube.NodeReady(&n) && !resuming {
			add(Finding{Check: CheckReady, Node: n.Name, Blocks: true,
				Message: n.Name + " is not Ready",
				Fix:     "bring it back first (rack status; the k3s log on it: journalctl -u k3s or k3s-agent), or remove it (rack node remove " + n.Name + ")"})
		}
		switch {
		case by == "":
		case resuming:
			add(Finding{Check: CheckCordoned, Node: n.Name,
				Message: n.Name + " was cordoned by an interrupted rack upgrade apply: this run finishes its upgrade and uncordons it"})
		default:
			who := "by someone else (kubectl cordon?)"
			if by != kube.CordonedElsewhere {
				who = "by " + by
			}
			add(Finding{Check: CheckCordoned, Node: n.Name, Blocks: true,
				Message: n.Name + " is cordoned " + who + ", and the upgrade would uncordon it after its turn",
				Fix:     "finish what it was cordoned for, then rack node uncordon " + n.Name + " (or rack node remove " + n.Name + ")"})
		}
		if st.Inventory != nil && !st.Inventory[n.Name] {
			add(Finding{Check: CheckInventory, Node: n.Name, Blocks: true,
				Message: n.Name + " is in the cluster but not in the inventory, so rack cannot reach it to upgrade it",
				Fix:     "add it to the inventory, or remove it from the cluster (kubectl delete node " + n.Name + ")"})
		}
	}
	out = append(out, pdbFindings(st, drained)...)
	out = append(out, longhornFindings(st)...)
	out = append(out, cgroupFindings(plan, st)...)
	out = append(out, removedFindings(st)...)
	return out
}

// pdbFindings says what every budget guarding pods on a node to drain
// allows; one that allows nothing now would hold the drain until --timeout.
func pdbFindings(st State, drained map[string]bool) []Finding {
	var out []Finding
	for _, pdb := range st.PDBs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() {
			continue
		}
		var on []string
		seen := map[string]bool{}
		for _, p := range st.Pods {
			if p.Namespace != pdb.Namespace || !sel.Matches(labels.Set(p.Labels)) || !drained[p.Spec.NodeName] || seen[p.Spec.NodeName] {
				continue
			}
			seen[p.Spec.NodeName] = true
			on = append(on, p.Spec.NodeName)
		}
		if len(on) == 0 {
			continue
		}
		sort.Strings(on)
		name := pdb.Namespace + "/" + pdb.Name
		f := Finding{Check: CheckPDB, Object: "PodDisruptionBudget " + name,
			Message: fmt.Sprintf("PDB %s allows %d disruption(s) now (%d healthy, %d needed); it guards pods on %s",
				name, pdb.Status.DisruptionsAllowed, pdb.Status.CurrentHealthy, pdb.Status.DesiredHealthy, strings.Join(on, ", "))}
		if pdb.Status.DisruptionsAllowed < 1 {
			f.Blocks, f.Forceable = true, true
			f.Fix = "draining " + strings.Join(on, ", ") + " would wait on it until the drain's --timeout: scale the workload up or relax the budget, or pass --force to try anyway"
		}
		out = append(out, f)
	}
	return out
}

func longhornFindings(st State) []Finding {
	if !st.LonghornInstalled {
		return nil
	}
	var out []Finding
	bad := 0
	for _, v := range st.Longhorn {
		if v.State != "attached" || v.Robustness == "healthy" {
			continue
		}
		bad++
		out = append(out, Finding{Check: CheckLonghorn, Object: "Volume longhorn-system/" + v.Name, Blocks: true, Forceable: true,
			Message: fmt.Sprintf("Longhorn volume %s is %s", v.Name, dashed(v.Robustness)),
			Fix:     "wait until Longhorn has rebuilt its replicas (robustness healthy): draining a node could take its last good replica; --force goes on anyway"})
	}
	if bad == 0 {
		out = append(out, Finding{Check: CheckLonghorn, Message: fmt.Sprintf("Longhorn: %d volume(s), every attached one healthy", len(st.Longhorn))})
	}
	return out
}

// cgroupFindings refuses a step to k3s ≥ 1.35 on a cgroup v1 host whose
// k3s config does not set the kubelet's fail-cgroupv1=false: that kubelet
// would not start, and the node would stay down in the middle of the upgrade.
func cgroupFindings(plan Plan, st State) []Finding {
	var out []Finding
	done := map[string]bool{}
	inInventory := false
	for _, a := range st.InventoryArgs {
		if a == FailCgroupV1Arg {
			inInventory = true
		}
	}
	for _, s := range plan.Steps {
		v, err := inventory.ParseK3sVersion(s.Version)
		if err != nil || v.MinorVersion().Compare(CgroupV1Minor) < 0 {
			continue
		}
		for _, name := range s.Nodes {
			f, ok := st.Facts[name]
			if done[name] || !ok || f.CgroupVersion != 1 || allowsCgroupV1(f.K3sConfig) {
				continue
			}
			done[name] = true
			fix := "either boot " + name + " with the unified cgroup hierarchy (cgroup v2: systemd.unified_cgroup_hierarchy=1 on the kernel command line, then reboot), " +
				"or let the kubelet run on cgroup v1: add \"" + FailCgroupV1Arg + "\" to cluster.k3s.args and run rack up --nodes-only before the upgrade"
			if inInventory {
				fix = "cluster.k3s.args has " + FailCgroupV1Arg + " but " + name + "'s config.yaml does not yet: run rack up --nodes-only first (or boot it with the unified cgroup hierarchy)"
			}
			out = append(out, Finding{Check: CheckCgroup, Node: name, Blocks: true,
				Message: fmt.Sprintf("%s runs on cgroup v1, and the kubelet of k3s %s refuses cgroup v1 by default (failCgroupV1): it would not start", name, s.Version),
				Fix:     fix})
		}
	}
	return out
}

// allowsCgroupV1 reads k3s' config.yaml for kubelet-arg fail-cgroupv1=false.
func allowsCgroupV1(config string) bool {
	var m map[string]any
	if yaml.Unmarshal([]byte(config), &m) != nil {
		return false
	}
	var args []string
	switch v := m["kubelet-arg"].(type) {
	case string:
		args = []string{v}
	case []any:
		for _, a := range v {
			args = append(args, fmt.Sprint(a))
		}
	}
	for _, a := range args {
		if strings.TrimPrefix(a, "--") == "fail-cgroupv1=false" {
			return true
		}
	}
	return false
}

func removedFindings(st State) []Finding {
	type key struct{ gv, kind, minor string }
	byAPI := map[key][]string{}
	apis := map[key]catalog.RemovedAPI{}
	var keys []key
	for _, o := range st.Stored {
		k := key{o.API.GroupVersion(), o.API.Kind, o.Minor}
		if _, ok := byAPI[k]; !ok {
			keys = append(keys, k)
		}
		byAPI[k] = append(byAPI[k], o.Object)
		apis[k] = o.API
	}
	var out []Finding
	for _, k := range keys {
		api := apis[k]
		objs := byAPI[k]
		sort.Strings(objs)
		to := "a replacement (there is none in Kubernetes: remove the objects)"
		if api.Replacement != "" {
			to = api.Replacement
		}
		for _, o := range objs {
			out = append(out, Finding{Check: CheckRemovedAPI, Object: k.kind + " " + o, Blocks: true, Forceable: true,
				Message: fmt.Sprintf("%s %s was written under %s, which k3s %s no longer serves", k.kind, o, k.gv, k.minor),
				Fix:     fmt.Sprintf("migrate it to %s (apply its manifest again with apiVersion: %s) before the upgrade, or pass --force", to, to)})
		}
	}
	return out
}

// Blocking are the findings that refuse the upgrade, given --force.
func Blocking(fs []Finding, force bool) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Blocks && !(force && f.Forceable) {
			out = append(out, f)
		}
	}
	return out
}

func dashed(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
