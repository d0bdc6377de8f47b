package upgrade

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s"
	"github.com/homelab/rack/nodes/kube"
)

// ApplyOptions are `rack upgrade apply`'s inputs.
type ApplyOptions struct {
	// Request carries the catalog, --to and --at; its Nodes are read from
	// the cluster.
	Request Request
	// Force overrides the forceable pre-flight findings.
	Force bool
	// Concurrency is how many agents are upgraded at once (default 1).
	Concurrency int
	// Drain is how each node is drained (By is set to CordonedByUpgrade).
	Drain kube.DrainOptions
	// K3s carries the binaries, SSH resolution, fan-out and --timeout.
	K3s k3s.Options
}

// Cluster is how the executor reaches the cluster's API.
type Cluster struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
}

// NodeRun is one node's turn in one step: the steps that move it to Version.
type NodeRun struct {
	Node    string       `json:"node"`
	Role    string       `json:"role"`
	Version string       `json:"version"`
	Steps   []nodes.Step `json:"steps"`
}

// Execution is a prepared `rack upgrade apply`: the plan, the pre-flight's
// findings, and every node's steps in the order they run. It is data until
// Run: printing it and running it use the same values.
type Execution struct {
	From      string    `json:"from"`
	To        string    `json:"to"`
	Plan      Plan      `json:"-"`
	Steps     []Step    `json:"steps"`
	Preflight []Finding `json:"preflight"`
	// Resume are the steps that finish nodes an interrupted run left
	// cordoned (and without their record), before the plan goes on.
	Resume []NodeRun `json:"resume"`
	Runs   []NodeRun `json:"runs"`
	// Warnings are things the operator should know but that do not stop
	// the upgrade (a one-node cluster is not drained).
	Warnings []string `json:"warnings"`

	force bool
	conc  int
	opts  k3s.Options
	u     *k3s.Upgrader
	inv   *inventory.Inventory
}

// Prepare reads the cluster, plans the upgrade (Make), runs the pre-flight
// and builds every node's steps. It changes nothing: not on the nodes
// (facts are read over SSH), not in the cluster.
func Prepare(ctx context.Context, inv *inventory.Inventory, c Cluster, o ApplyOptions) (*Execution, error) {
	list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: the API server did not answer: %w (is a server up?)", inv.Cluster.Name, err)
	}
	cluster := list.Items
	sortByInventory(inv, cluster)
	req := o.Request
	req.From = ""
	req.Nodes = nil
	for _, n := range cluster {
		req.Nodes = append(req.Nodes, Node{Name: n.Name, Role: roleOf(inv, &n), Version: n.Status.NodeInfo.KubeletVersion})
	}
	plan, err := Make(req)
	if err != nil {
		return nil, err
	}
	e := &Execution{From: plan.From, To: plan.To, Plan: plan, Steps: plan.Steps, Preflight: []Finding{}, Resume: []NodeRun{}, Runs: []NodeRun{}, Warnings: []string{},
		force: o.Force, conc: max(1, o.Concurrency), opts: o.K3s, inv: inv}
	e.u = k3s.NewUpgrader(inv, o.K3s, c.Client)

	byName := map[string]*corev1.Node{}
	for i := range cluster {
		byName[cluster[i].Name] = &cluster[i]
	}
	// The nodes to touch: those the plan upgrades, and those an interrupted
	// run left cordoned.
	first := map[string]bool{}
	if len(plan.Steps) > 0 {
		for _, n := range plan.Steps[0].Nodes {
			first[n] = true
		}
	}
	var touch []string
	seen := map[string]bool{}
	for _, s := range plan.Steps {
		for _, n := range s.Nodes {
			if !seen[n] {
				seen[n] = true
				touch = append(touch, n)
			}
		}
	}
	var resume []string
	for _, n := range cluster {
		if kube.CordonedBy(&n) == kube.CordonedByUpgrade && !first[n.Name] {
			resume = append(resume, n.Name)
			if !seen[n.Name] {
				seen[n.Name] = true
				touch = append(touch, n.Name)
			}
		}
	}

	st := State{Nodes: cluster, Inventory: map[string]bool{}, InventoryArgs: inv.Cluster.K3s.Args, Facts: map[string]nodes.Facts{}}
	for _, n := range inv.Nodes {
		st.Inventory[n.Name] = true
	}
	var unknown []string
	for _, n := range touch {
		if !st.Inventory[n] {
			unknown = append(unknown, n)
		}
	}
	var observed map[string]k3s.Observed
	if len(unknown) == 0 && len(touch) > 0 {
		observed, err = e.u.Observe(ctx, touch)
		if err != nil {
			e.u.Close()
			return nil, fmt.Errorf("reading the nodes to upgrade over SSH: %w (rack upgrade apply needs every one of them)", err)
		}
		for name, obs := range observed {
			st.Facts[name] = obs.Facts
		}
	}
	drained := map[string]bool{}
	single := len(cluster) == 1
	if !single {
		for _, n := range touch {
			drained[n] = true
		}
	}
	if err := gather(ctx, c, plan, &st); err != nil {
		e.u.Close()
		return nil, err
	}
	e.Preflight = Preflight(plan, st, drained)
	if len(unknown) > 0 {
		return e, nil // the pre-flight names them; no steps without SSH
	}

	d := o.Drain
	d.By = kube.CordonedByUpgrade
	drain := k3s.Drain{Options: d}
	if single && len(plan.Steps) > 0 {
		drain.Skip = cluster[0].Name + " is the cluster's only node"
		e.Warnings = append(e.Warnings, "a one-node cluster is upgraded without a drain: its pods stop while k3s restarts")
	}
	for _, name := range resume {
		n := byName[name]
		nr := NodeRun{Node: name, Role: roleOf(inv, n), Version: n.Status.NodeInfo.KubeletVersion}
		if obs := observed[name]; e.u.NeedsRecord(obs, nr.Version) {
			s, err := e.u.RecordStep(name, nr.Version, obs)
			if err != nil {
				e.u.Close()
				return nil, err
			}
			nr.Steps = append(nr.Steps, s)
		}
		nr.Steps = append(nr.Steps, e.u.UncordonStep(name, "an interrupted rack upgrade apply left it cordoned after its upgrade to "+nr.Version))
		e.Resume = append(e.Resume, nr)
	}
	for _, s := range plan.Steps {
		for i, name := range s.Nodes {
			steps, err := e.u.UpgradeSteps(ctx, name, s.Version, observed[name], drain)
			if err != nil {
				e.u.Close()
				return nil, err
			}
			role := inventory.RoleAgent
			if i < s.Servers {
				role = inventory.RoleServer
			}
			e.Runs = append(e.Runs, NodeRun{Node: name, Role: role, Version: s.Version, Steps: steps})
		}
	}
	return e, nil
}

// roleOf is the node's role: the inventory's, else what k3s labelled it.
func roleOf(inv *inventory.Inventory, n *corev1.Node) string {
	if in, ok := inv.Node(n.Name); ok {
		return in.Role
	}
	if _, ok := n.Labels["node-role.kubernetes.io/control-plane"]; ok {
		return inventory.RoleServer
	}
	return inventory.RoleAgent
}

// sortByInventory orders Nodes as the inventory lists them (first server
// first), then those it does not list.
func sortByInventory(inv *inventory.Inventory, ns []corev1.Node) {
	idx := map[string]int{}
	for i, n := range inv.Nodes {
		idx[n.Name] = i
	}
	order := func(name string) int {
		if i, ok := idx[name]; ok {
			return i
		}
		return len(inv.Nodes)
	}
	slices.SortStableFunc(ns, func(a, b corev1.Node) int { return cmp.Compare(order(a.Name), order(b.Name)) })
}

// gather reads what the pre-flight judges from the API: PDBs and pods,
// Longhorn's volumes, objects under removed APIs.
func gather(ctx context.Context, c Cluster, plan Plan, st *State) error {
	pdbs, err := c.Client.PolicyV1().PodDisruptionBudgets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("reading PodDisruptionBudgets: %w", err)
	}
	st.PDBs = pdbs.Items
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("reading pods: %w", err)
	}
	st.Pods = pods.Items
	if err := gatherLonghorn(ctx, c, st); err != nil {
		return err
	}
	return gatherRemoved(ctx, c, plan, st)
}

var longhornVolumes = schema.GroupVersionResource{Group: "longhorn.io", Version: "v1beta2", Resource: "volumes"}

func gatherLonghorn(ctx context.Context, c Cluster, st *State) error {
	if _, err := c.Client.Discovery().ServerResourcesForGroupVersion(longhornVolumes.GroupVersion().String()); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // Longhorn is not installed
		}
		return fmt.Errorf("asking the API server whether Longhorn is installed: %w", err)
	}
	st.LonghornInstalled = true
	if c.Dynamic == nil {
		return errors.New("no dynamic client to read Longhorn's volumes")
	}
	list, err := c.Dynamic.Resource(longhornVolumes).Namespace("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("reading Longhorn's volumes: %w", err)
	}
	for _, v := range list.Items {
		status, _ := v.Object["status"].(map[string]any)
		state, _ := status["state"].(string)
		rob, _ := status["robustness"].(string)
		st.Longhorn = append(st.Longhorn, LonghornVolume{Name: v.GetName(), State: state, Robustness: rob})
	}
	return nil
}

// gatherRemoved lists, for every API version a minor on the path removes
// and the server still serves, the objects written under it: those whose
// managedFields name that version (or that carry none, which cannot be
// told apart). An object the API server would also serve under the old
// version but that was written under the new one is not named.
func gatherRemoved(ctx context.Context, c Cluster, plan Plan, st *State) error {
	for _, s := range plan.Steps {
		minor := s.Version
		if v, err := inventory.ParseK3sVersion(s.Version); err == nil {
			minor = v.Minor()
		}
		for _, api := range s.RemovedAPIs {
			gv := api.GroupVersion()
			res, err := c.Client.Discovery().ServerResourcesForGroupVersion(gv)
			if err != nil {
				if apierrors.IsNotFound(err) {
					continue // not served (any more): nothing can be stored under it
				}
				return fmt.Errorf("asking the API server about %s: %w", gv, err)
			}
			var resource string
			namespaced := false
			for _, r := range res.APIResources {
				if r.Kind == api.Kind && !strings.Contains(r.Name, "/") {
					resource, namespaced = r.Name, r.Namespaced
				}
			}
			if resource == "" || c.Dynamic == nil {
				continue
			}
			gvr := schema.GroupVersionResource{Group: api.Group, Version: api.Version, Resource: resource}
			list, err := c.Dynamic.Resource(gvr).Namespace("").List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("listing %s %s: %w", gv, api.Kind, err)
			}
			for _, obj := range list.Items {
				if !writtenUnder(obj.GetManagedFields(), gv) {
					continue
				}
				name := obj.GetName()
				if namespaced {
					name = obj.GetNamespace() + "/" + name
				}
				st.Stored = append(st.Stored, StoredObject{API: api, Minor: minor, Object: name})
			}
		}
	}
	return nil
}

func writtenUnder(mf []metav1.ManagedFieldsEntry, gv string) bool {
	if len(mf) == 0 {
		return true
	}
	for _, m := range mf {
		if m.APIVersion == gv {
			return true
		}
	}
	return false
}

// Blocking are the pre-flight findings that refuse this upgrade.
func (e *Execution) Blocking() []Finding { return Blocking(e.Preflight, e.force) }

// Close releases what Prepare opened.
func (e *Execution) Close() {
	if e.u != nil {
		e.u.Close()
	}
}

// ErrRefused marks an upgrade the pre-flight refused; nothing was changed.
var ErrRefused = errors.New("upgrade refused by the pre-flight")

// Run carries the execution out: first the nodes an interrupted run left
// cordoned, then each step: its servers one at a time, then its agents
// (Concurrency at once). It stops at the first failure, with an error that
// says where every node stands and that running it again resumes.
func (e *Execution) Run(ctx context.Context) ([]nodes.Result, error) {
	defer e.Close()
	if bad := e.Blocking(); len(bad) > 0 {
		var lines []string
		for _, f := range bad {
			lines = append(lines, f.Message+": "+f.Fix)
		}
		return nil, fmt.Errorf("%w, nothing was changed:\n  %s", ErrRefused, strings.Join(lines, "\n  "))
	}
	var all []nodes.Result
	fo := e.opts.FanOut
	run := func(runs []NodeRun, serial bool) ([]nodes.Result, error) {
		if len(runs) == 0 {
			return nil, nil
		}
		by := map[string]NodeRun{}
		var targets []nodes.Target
		for _, r := range runs {
			t, err := e.u.Target(r.Node)
			if err != nil {
				return nil, err
			}
			by[r.Node] = r
			targets = append(targets, t)
		}
		o := fo
		o.Serial, o.StopOnError, o.Concurrency = serial, true, e.conc
		res := nodes.FanOut(ctx, targets, o, func(ctx context.Context, h *nodes.Host) error {
			return nodes.RunSteps(ctx, h, by[h.Target.Name].Steps)
		})
		return res, nodes.Errors(res)
	}
	res, err := run(e.Resume, true)
	all = append(all, res...)
	if err != nil {
		return all, e.stopped(err, "", all)
	}
	i := 0
	for _, s := range e.Steps {
		var servers, agents []NodeRun
		for ; i < len(e.Runs) && e.Runs[i].Version == s.Version; i++ {
			if e.Runs[i].Role == inventory.RoleServer {
				servers = append(servers, e.Runs[i])
			} else {
				agents = append(agents, e.Runs[i])
			}
		}
		// Servers one at a time: each API server (and etcd member) must be
		// back before the next goes, and no kubelet may be newer than one.
		res, err := run(servers, true)
		all = append(all, res...)
		if err == nil {
			res, err = run(agents, false)
			all = append(all, res...)
		}
		if err != nil {
			return all, e.stopped(err, s.Version, all)
		}
	}
	return all, nil
}

// stopped explains a failed run: what failed, where the nodes stand, how to go on.
func (e *Execution) stopped(err error, version string, res []nodes.Result) error {
	var done, failed, skipped []string
	for _, r := range res {
		switch {
		case r.Err == nil:
			done = append(done, r.Node)
		case strings.Contains(r.Err.Error(), "not started"):
			skipped = append(skipped, r.Node)
		default:
			failed = append(failed, r.Node)
		}
	}
	where := ""
	if version != "" {
		where = " during the step to " + version
	}
	msg := fmt.Sprintf("rack upgrade apply stopped%s: %v\n  finished: %s\n  failed: %s (left cordoned if its drain had begun: kubectl get nodes shows it)\n  not started: %s\n"+
		"  fix the cause and run rack upgrade apply again: nodes already at a step's version are skipped, and a node rack cordoned is uncordoned after its upgrade",
		where, err, orNone(done), orNone(failed), orNone(skipped))
	return errors.New(msg)
}

// Done describes the finished upgrade and what the inventory should say now.
func (e *Execution) Done(w io.Writer) {
	if len(e.Steps) == 0 && len(e.Resume) == 0 {
		fmt.Fprintf(w, "nothing to upgrade: the cluster runs %s\n", e.To)
		return
	}
	fmt.Fprintf(w, "the cluster runs k3s %s\n", e.To)
	if e.inv.Cluster.K3s.Version != e.To {
		fmt.Fprintf(w, "set cluster.k3s.version to %s in %s, so that rack up and rack node add install it (rack up refuses a version change itself)\n", e.To, e.inv.File)
	}
}
