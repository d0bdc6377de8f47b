package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s"
	"github.com/homelab/rack/nodes/kube"
	"github.com/homelab/rack/stacks"
)

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Day-2 work on one node: drain, uncordon, add, remove",
		Args:  exactArgs(0, "a subcommand (drain, uncordon, add, remove)"),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newNodeDrainCmd(g), newNodeUncordonCmd(g), newNodeAddCmd(g), newNodeRemoveCmd(g))
	return cmd
}

// clusterContext is the cluster's context in kubeconfig, or in the one rack
// up keeps (.rack/<cluster>/kubeconfig) when kubeconfig is empty.
func clusterContext(inv *inventory.Inventory, kubeconfig string) (*kube.Kubeconfig, error) {
	if kubeconfig == "" {
		kubeconfig = inv.State().Kubeconfig()
	}
	return kube.LoadContext(kubeconfig, inv.Cluster.Name)
}

// apiClient is a client for the cluster through rack's kubeconfig
// (.rack/<cluster>/kubeconfig) or the context named after the cluster in
// --kubeconfig. Its rate limit suits a drain's many calls.
func apiClient(inv *inventory.Inventory, kubeconfig string) (kubernetes.Interface, dynamic.Interface, error) {
	kc, err := clusterContext(inv, kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	rc, err := kc.RESTConfig()
	if err != nil {
		return nil, nil, err
	}
	rc.QPS, rc.Burst = 50, 100
	return kube.NewClients(rc)
}

// kubeconfigFlag is --kubeconfig of the commands that talk to the cluster.
func kubeconfigFlag(cmd *cobra.Command, kubeconfig *string) {
	cmd.Flags().StringVar(kubeconfig, "kubeconfig", "", "kubeconfig holding a context named after the cluster (default: the one rack up keeps in .rack/<cluster>/)")
}

// onNode is the RunE of the node commands that only talk to the API server:
// it loads the inventory, connects to its cluster (through *kubeconfig, read
// when the command runs) and acts on the node named by the one argument.
func onNode(g *globals, kubeconfig *string, act func(ctx context.Context, cs kubernetes.Interface, name string) error) func(*cobra.Command, []string) error {
	return onInventoryNode(g, func(ctx context.Context, inv *inventory.Inventory, name string) error {
		cs, _, err := apiClient(inv, *kubeconfig)
		if err != nil {
			return fail(err)
		}
		return act(ctx, cs, name)
	})
}

// onInventoryNode runs act on the command's NAME argument with the
// inventory loaded and validated.
func onInventoryNode(g *globals, act func(ctx context.Context, inv *inventory.Inventory, name string) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		inv, err := loadInventory(g)
		if err != nil {
			return err
		}
		return act(c.Context(), inv, args[0])
	}
}

// drainFlags are the flags of every command that drains a node.
type drainFlags struct {
	timeout     time.Duration
	force       bool
	emptyDir    bool
	gracePeriod int
}

func (f *drainFlags) register(cmd *cobra.Command, timeoutFlag string, forceHelp string) {
	cmd.Flags().DurationVar(&f.timeout, timeoutFlag, 5*time.Minute, "how long the evictions may take before rack gives up (0: no limit); the node stays cordoned then")
	if forceHelp != "" {
		cmd.Flags().BoolVar(&f.force, "force", false, forceHelp)
	}
	cmd.Flags().BoolVar(&f.emptyDir, "delete-emptydir-data", false, "evict pods with emptyDir volumes too (their emptyDir data is lost)")
	cmd.Flags().IntVar(&f.gracePeriod, "grace-period", -1, "seconds each pod gets to terminate (negative: the pod's own terminationGracePeriodSeconds)")
}

func (f *drainFlags) options(g *globals) kube.DrainOptions {
	return kube.DrainOptions{Timeout: f.timeout, Force: f.force, DeleteEmptyDirData: f.emptyDir, GracePeriod: f.gracePeriod, Out: g.stderr}
}

func newNodeDrainCmd(g *globals) *cobra.Command {
	var df drainFlags
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "drain NAME",
		Short: "Cordon a node and evict its pods through the Eviction API, honouring PodDisruptionBudgets",
		Long: `rack node drain cordons the node, then evicts its pods through the Eviction API
(k8s.io/kubectl/pkg/drain, as kubectl drain does): a PodDisruptionBudget that
allows no disruption is waited on, and rack says so ("waiting on PDB web: 0
disruptions allowed"), until --timeout. DaemonSet pods are left alone. Pods no
controller manages are refused unless --force (they are deleted for good), pods
with emptyDir volumes unless --delete-emptydir-data.

When it times out, rack exits 1 and the node stays cordoned: run it again once
the pods can move, or rack node uncordon NAME to give up.`,
		Args: exactArgs(1, "the node's name"),
		RunE: onNode(g, &kubeconfig, func(ctx context.Context, cs kubernetes.Interface, name string) error {
			rep, err := kube.Drain(ctx, cs, name, df.options(g))
			if err != nil {
				return fail(err)
			}
			if g.output == outputJSON {
				return fail(writeJSON(g.stdout, rep))
			}
			fmt.Fprintf(g.stdout, "node %s drained: %d pod(s) evicted; rack node uncordon %s makes it schedulable again\n", rep.Node, len(rep.Evicted), rep.Node)
			return nil
		}),
	}
	df.register(cmd, "timeout", "also delete pods no controller manages (they are not recreated)")
	kubeconfigFlag(cmd, &kubeconfig)
	return cmd
}

func newNodeUncordonCmd(g *globals) *cobra.Command {
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "uncordon NAME",
		Short: "Make a node schedulable again",
		Args:  exactArgs(1, "the node's name"),
		RunE: onNode(g, &kubeconfig, func(ctx context.Context, cs kubernetes.Interface, name string) error {
			if err := kube.Uncordon(ctx, cs, name); err != nil {
				return fail(err)
			}
			if g.output == outputJSON {
				return fail(writeJSON(g.stdout, map[string]any{"node": name, "cordoned": false}))
			}
			fmt.Fprintf(g.stdout, "node %s uncordoned\n", name)
			return nil
		}),
	}
	kubeconfigFlag(cmd, &kubeconfig)
	return cmd
}

func newNodeAddCmd(g *globals) *cobra.Command {
	var nf nodeFlags
	var nodesOnly bool
	var backend string
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Bootstrap and join a node of the inventory, wait until Ready, re-run the stacks",
		Long: `rack node add installs k3s on NAME (which must be in the inventory) and joins it
to the cluster, at the inventory's version, exactly as rack up would, touching no
other node; it waits until the Node is Ready, then re-runs the platform stacks
(so Longhorn disks and local volumes include it) unless --nodes-only.`,
		Args: exactArgs(1, "the node's name (as the inventory lists it)"),
		RunE: onInventoryNode(g, func(ctx context.Context, inv *inventory.Inventory, name string) error {
			if _, ok := inv.Node(name); !ok {
				return fail(fmt.Errorf("node %s is not in the inventory %s: add it under nodes: first (rack inventory validate checks it)", name, inv.File))
			}
			so := stacks.Options{Backend: backend, Progress: g.stderr}
			if !nodesOnly {
				if err := stacks.Check(ctx, so); err != nil {
					return fail(err)
				}
			}
			o, err := nf.options(g, inv)
			if err != nil {
				return err
			}
			o.Only = []string{name}
			plan, err := k3s.BuildPlan(ctx, inv, o)
			if err != nil {
				return fail(err)
			}
			if err := printPlan(g, plan); err != nil {
				return fail(err)
			}
			if err := plan.ChangesOnly(name); err != nil {
				return fail(fmt.Errorf("rack node add: %w", err))
			}
			if plan.Changes() > 0 && !g.yes {
				if err := confirm(g, fmt.Sprintf("Add %s to cluster %s?", name, inv.Cluster.Name)); err != nil {
					return err
				}
			}
			out, err := k3s.Apply(ctx, plan, o)
			if out != nil {
				fmt.Fprintln(g.stderr)
				_ = nodes.WriteSummary(g.stderr, out.Results)
			}
			if err != nil {
				return fail(err)
			}
			cs, _, err := apiClient(inv, "")
			if err != nil {
				return fail(err)
			}
			if err := kube.WaitReady(ctx, cs, name, plan.Version, false, o.ReadyTimeout); err != nil {
				return fail(err)
			}
			fmt.Fprintf(g.stdout, "node %s is Ready at %s\n", name, plan.Version)
			if nodesOnly {
				return nil
			}
			return platformUp(ctx, g, inv, so)
		}),
	}
	nf.register(cmd)
	cmd.Flags().BoolVar(&nodesOnly, "nodes-only", false, "stop once the node is Ready (do not re-run the platform stacks)")
	cmd.Flags().StringVar(&backend, "backend", "", "Pulumi state backend URL (default file://.rack/<cluster>/state beside the inventory)")
	return cmd
}

func newNodeRemoveCmd(g *globals) *cobra.Command {
	var df drainFlags
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Drain a node, delete it from the cluster (and etcd), uninstall k3s on it",
		Long: `rack node remove drains NAME, deletes its Node (for a server, k3s' etcd member
controller then removes its etcd member, which rack checks through another
server), stops k3s on it and uninstalls it: the binary, the service, the config
and k3s' data. Storage folders (Longhorn's, local volumes) stay.

It refuses to remove the cluster's last server, the inventory's first server
while others remain, or a server whose removal leaves etcd without quorum,
unless --force. --force also removes an unreachable node from the cluster
without uninstalling it. Remove the node from the inventory afterwards.`,
		Args: exactArgs(1, "the node's name (as the inventory lists it)"),
		RunE: onInventoryNode(g, func(ctx context.Context, inv *inventory.Inventory, name string) error {
			o, err := k3s.NewOptions(inv)
			if err != nil {
				return fail(err)
			}
			o.ReadyTimeout = timeout
			o.FanOut = nodes.FanOutOptions{Progress: nodes.NewProgress(g.stderr)}
			if g.verbose {
				o.FanOut.Connect.Output = g.stderr
			}
			cs, _, err := apiClient(inv, "")
			if err != nil {
				return fail(err)
			}
			u := k3s.NewUpgrader(inv, o, cs)
			defer u.Close()
			r, err := u.PlanRemoval(ctx, name, k3s.RemoveOptions{Force: df.force, Drain: df.options(g)})
			if err != nil {
				return fail(err)
			}
			if err := printRemoval(g, r); err != nil {
				return fail(err)
			}
			if r.Blocked(df.force) {
				return fail(fmt.Errorf("refused, nothing was changed: %s", strings.Join(r.Refusals, "; ")))
			}
			if !g.yes {
				if err := confirm(g, fmt.Sprintf("Remove %s from cluster %s and uninstall k3s on it?", name, inv.Cluster.Name)); err != nil {
					return err
				}
			}
			if err := r.Run(ctx); err != nil {
				return fail(fmt.Errorf("%w\nrack node remove %s runs the steps left again", err, name))
			}
			if g.output != outputJSON {
				fmt.Fprintf(g.stdout, "node %s removed: delete its entry from %s, or rack up installs it again\n", name, inv.File)
			}
			return nil
		}),
	}
	df.register(cmd, "drain-timeout", "remove the last server, the first server, a member etcd needs for quorum, or an unreachable node (from the cluster only)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the Node's deletion and the etcd member's removal")
	return cmd
}

// printRemoval shows the removal's plan, as rack plan shows a node's.
func printRemoval(g *globals, r *k3s.Removal) error {
	if g.output == outputJSON {
		return writeJSON(g.stdout, r)
	}
	fmt.Fprintf(g.stdout, "remove %s (%s)\n", r.Node, r.Role)
	for _, s := range r.Refusals {
		fmt.Fprintf(g.stdout, "  REFUSED: %s\n", s)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(g.stdout, "  warning: %s\n", w)
	}
	writeSteps(g, r.Steps)
	return nil
}

// writeSteps lists steps as rack plan does: a number, the name, the reason.
func writeSteps(g *globals, steps []nodes.Step) {
	for i, s := range steps {
		fmt.Fprintf(g.stdout, "  %d. %s\n", i+1, s.Name)
		if s.Why != "" {
			fmt.Fprintf(g.stdout, "     why: %s\n", s.Why)
		}
	}
}
