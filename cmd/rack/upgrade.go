package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s"
	"github.com/homelab/rack/nodes/k3s/upgrade"
	"github.com/homelab/rack/nodes/kube"
)

func newUpgradeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Upgrade k3s one supported minor at a time",
		Args:  exactArgs(0, "a subcommand (plan, apply)"),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newUpgradePlanCmd(g), newUpgradeApplyCmd(g))
	return cmd
}

func newUpgradePlanCmd(g *globals) *cobra.Command {
	var cf catalogFlags
	var to, from string
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show the upgrade path to --to (default the stable channel); changes nothing",
		Long: `Plans the k3s upgrade from the versions the cluster's nodes run (read through
the API with rack's kubeconfig), or offline from --from VERSION.

The path goes one minor at a time, through the newest release of every minor in
between; in each step the servers go one at a time, then the agents, so no
kubelet is ever newer than an API server. rack refuses a downgrade, a target
outside the support window at --at, a version missing from the catalog, and a
cluster whose version skew is already illegal (naming the nodes).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			at, c, _, err := cf.read(g)
			if err != nil {
				return err
			}
			req := upgrade.Request{Catalog: c, From: from, To: to, At: at}
			if from == "" {
				inv, err := loadInventory(g)
				if err != nil {
					return err
				}
				ctx := cmd.Context()
				if req.Nodes, err = clusterNodes(ctx, inv); err != nil {
					return fail(err)
				}
			}
			plan, err := upgrade.Make(req)
			if err != nil {
				return fail(err)
			}
			if g.output == outputJSON {
				return fail(writeJSON(g.stdout, plan))
			}
			return fail(plan.WriteText(g.stdout, at))
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&to, "to", "", "target: a k3s release (v1.34.2+k3s1) or a minor (v1.34, its newest release); default the stable channel")
	cmd.Flags().StringVar(&from, "from", "", "plan offline from this k3s release instead of reading the cluster")
	return cmd
}

// clusterNodes reads each node's role and kubelet version through the API with
// rack's admin kubeconfig (.rack/<cluster>/kubeconfig). Read-only.
func clusterNodes(ctx context.Context, inv *inventory.Inventory) ([]upgrade.Node, error) {
	kc, err := kube.LoadContext(inv.State().Kubeconfig(), inv.Cluster.Name)
	if err != nil {
		return nil, fmt.Errorf("%w (or plan offline with --from VERSION)", err)
	}
	cs, err := kc.Clientset()
	if err != nil {
		return nil, err
	}
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: the API server did not answer: %w (is a server up? or plan offline with --from VERSION)", inv.Cluster.Name, err)
	}
	byName := map[string]int{}
	for i, n := range inv.Nodes {
		byName[n.Name] = i
	}
	out := make([]upgrade.Node, 0, len(list.Items))
	for _, n := range list.Items {
		role := inventory.RoleAgent
		if _, ok := n.Labels["node-role.kubernetes.io/control-plane"]; ok {
			role = inventory.RoleServer
		}
		out = append(out, upgrade.Node{Name: n.Name, Role: role, Version: n.Status.NodeInfo.KubeletVersion})
	}
	// The inventory's order (first server first), then nodes it does not list.
	order := func(name string) int {
		if i, ok := byName[name]; ok {
			return i
		}
		return len(inv.Nodes)
	}
	slices.SortStableFunc(out, func(a, b upgrade.Node) int { return cmp.Compare(order(a.Name), order(b.Name)) })
	return out, nil
}

func newUpgradeApplyCmd(g *globals) *cobra.Command {
	var cf catalogFlags
	var df drainFlags
	var to string
	var force bool
	var concurrency int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Upgrade k3s node by node along rack upgrade plan's path; resumable",
		Long: `Executes the path rack upgrade plan shows (--to, default the stable channel),
node by node: servers one at a time, then agents (--concurrency at once), one
minor at a time. Each node is drained (cordoned with rack's annotation, evicted
through the Eviction API), gets the step's verified binary, restarts k3s, must
come back Ready at the step's kubelet version, is recorded and uncordoned. A
one-node cluster is not drained.

The pre-flight refuses before anything changes: a node not Ready, a node
cordoned by someone else, a cgroup v1 host going to k3s 1.35 or later (whose
kubelet refuses cgroup v1) with the two fixes; and, unless --force, objects
written under an API version a minor on the path removes (named, with the
version that replaces it), a PodDisruptionBudget that allows no disruption of
pods on a node to drain, Longhorn volumes that are not healthy.

It stops at the first failure and says where every node stands; running it
again resumes: nodes already at a step's version are skipped, and a node rack
cordoned is uncordoned after its upgrade. Afterwards set cluster.k3s.version
to the new version: rack up does not change versions itself.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if concurrency < 1 {
				return fmt.Errorf("--concurrency %d: must be at least 1", concurrency)
			}
			at, c, _, err := cf.read(g)
			if err != nil {
				return err
			}
			inv, err := loadInventory(g)
			if err != nil {
				return err
			}
			cs, dyn, err := apiClient(inv, "")
			if err != nil {
				return fail(fmt.Errorf("%w (rack upgrade apply reads the cluster through rack's kubeconfig)", err))
			}
			o, err := k3s.NewOptions(inv)
			if err != nil {
				return fail(err)
			}
			o.ReadyTimeout = timeout
			o.FanOut = nodes.FanOutOptions{Concurrency: concurrency, Progress: nodes.NewProgress(g.stderr)}
			if g.verbose {
				o.FanOut.Connect.Output = g.stderr
			}
			ctx := cmd.Context()
			e, err := upgrade.Prepare(ctx, inv, upgrade.Cluster{Client: cs, Dynamic: dyn}, upgrade.ApplyOptions{
				Request: upgrade.Request{Catalog: c, To: to, At: at}, Force: force, Concurrency: concurrency,
				Drain: df.options(g), K3s: o})
			if err != nil {
				return fail(err)
			}
			defer e.Close()
			if err := printOut(g, e, func(w io.Writer) error { return e.WriteText(w, at) }); err != nil {
				return fail(err)
			}
			if bad := e.Blocking(); len(bad) > 0 {
				return fail(fmt.Errorf("the upgrade is refused, nothing was changed:\n  %s", upgrade.Summary(bad)))
			}
			if e.Changes() == 0 {
				if g.output != outputJSON {
					e.Done(g.stdout)
				}
				return nil
			}
			if !g.yes {
				if err := confirm(g, fmt.Sprintf("Upgrade cluster %s to k3s %s, node by node?", inv.Cluster.Name, e.To)); err != nil {
					return err
				}
			}
			res, err := e.Run(ctx)
			if len(res) > 0 {
				fmt.Fprintln(g.stderr)
				_ = nodes.WriteSummary(g.stderr, res)
			}
			if err != nil {
				return fail(err)
			}
			if g.output != outputJSON {
				e.Done(g.stdout)
			}
			return nil
		},
	}
	cf.register(cmd)
	df.register(cmd, "drain-timeout", "")
	cmd.Flags().StringVar(&to, "to", "", "target: a k3s release (v1.34.2+k3s1) or a minor (v1.34, its newest release); default the stable channel")
	cmd.Flags().BoolVar(&force, "force", false, "go on despite objects under removed APIs, PodDisruptionBudgets that allow no disruption now, or unhealthy Longhorn volumes")
	cmd.Flags().IntVar(&concurrency, "concurrency", 1, "agents upgraded at once (servers always go one at a time)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long each node may take to restart and be Ready at the new version")
	return cmd
}
