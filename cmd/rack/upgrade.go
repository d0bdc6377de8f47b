package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes/k3s/upgrade"
	"github.com/homelab/rack/nodes/kube"
)

func newUpgradeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Upgrade k3s one supported minor at a time",
		Args:  exactArgs(0, "a subcommand (plan)"),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newUpgradePlanCmd(g))
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
			at, err := cf.date()
			if err != nil {
				return err
			}
			c, _, err := cf.open(g)
			if err != nil {
				return err
			}
			req := upgrade.Request{Catalog: c, From: from, To: to, At: at}
			if from == "" {
				inv, err := loadInventory(g)
				if err != nil {
					return err
				}
				ctx, cancel := signalContext()
				defer cancel()
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
