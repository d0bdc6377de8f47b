package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s"
	"github.com/homelab/rack/stacks"
)

func newRebuildCmd(g *globals) *cobra.Command {
	var nf nodeFlags
	var ro k3s.RebuildOptions
	var dryRun, nodesOnly bool
	var backend string
	cmd := &cobra.Command{
		Use:   "rebuild",
		Short: "Disaster recovery: reinstall blank nodes, restore lost servers from a snapshot, re-run the stacks",
		Long: `rack rebuild brings the rack back from the inventory and the last backup.

Nodes that came back blank (same name and address, nothing of k3s left) are
reinstalled and rejoin the running cluster; their stale Node, node-password
Secret and (servers) etcd member are removed first. Nothing else is touched.

When every server lost its datastore, the first server is reinstalled and
restored from a snapshot (k3s server --cluster-reset
--cluster-reset-restore-path=<snapshot>, with the original token; a SQLite
backup is put back with k3s stopped), the other servers' old etcd data is moved
aside and they rejoin one at a time, blank agents rejoin, and then the platform
stacks run again (unless --nodes-only).

The snapshot is --snapshot FILE, or the newest backup in backups/<cluster>/
whose sha256 matches its manifest; a corrupted one is refused before anything
changes. The plan is printed first and confirmed (unless --yes); --dry-run
stops there. A rebuild that was interrupted is finished by running it again.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			so := stacks.Options{Backend: backend, Progress: g.stderr}
			if !nodesOnly && !dryRun {
				if err := stacks.Check(ctx, so); err != nil {
					return fail(err)
				}
			}
			inv, o, err := nf.load(g)
			if err != nil {
				return err
			}
			plan, err := k3s.PlanRebuild(ctx, inv, o, ro)
			if err != nil {
				return fail(err)
			}
			if err := printOut(g, plan, plan.WriteText); err != nil {
				return fail(err)
			}
			if len(plan.Refusals) > 0 {
				return fail(errSilent)
			}
			if dryRun || plan.Mode == k3s.RebuildNothing {
				return nil
			}
			if !g.yes {
				if err := confirm(g, fmt.Sprintf("Rebuild %d node(s)?", plan.Changes())); err != nil {
					return err
				}
			}
			out, err := plan.Run(ctx, o)
			if out != nil && len(out.Results) > 0 {
				fmt.Fprintln(g.stderr)
				_ = nodes.WriteSummary(g.stderr, out.Results)
			}
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(g.stdout, "rebuilt: %d node(s) back in cluster %s\n", plan.Changes(), inv.Cluster.Name)
			if nodesOnly {
				return nil
			}
			return platformUp(ctx, g, inv, so)
		},
	}
	nf.register(cmd)
	cmd.Flags().StringVar(&ro.Snapshot, "snapshot", "", "backup to restore (its file or manifest); default the newest verified one in --backups")
	cmd.Flags().StringVar(&ro.Backups, "backups", "", "folder rack backup wrote to (default backups/<cluster>/ beside the inventory)")
	cmd.Flags().BoolVar(&ro.Restore, "restore", false, "restore the snapshot even though servers still hold data (it is moved aside, not deleted)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	cmd.Flags().BoolVar(&nodesOnly, "nodes-only", false, "stop after the nodes (no platform stacks)")
	cmd.Flags().StringVar(&backend, "backend", "", "Pulumi state backend URL (default file://.rack/<cluster>/state beside the inventory)")
	return cmd
}
