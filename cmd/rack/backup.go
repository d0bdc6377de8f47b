package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/homelab/rack/nodes/k3s"
)

func newBackupCmd(g *globals) *cobra.Command {
	var nf nodeFlags
	var bo k3s.BackupOptions
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Snapshot the cluster's datastore on a server and copy it here, verified",
		Long: `rack backup takes a snapshot of the cluster's datastore on a server and copies it
to --out (default backups/<cluster>/ beside the inventory) as
<cluster>-<UTC time>.snapshot, its sha256 checked against the server's, with a
manifest <same>.json ({"cluster", "k3sVersion", "servers", "time", "sha256",
"file", …}) and the server token a restore needs in <same>.token (0600, never
printed).

Embedded etcd: k3s etcd-snapshot save on the server, then the snapshot is deleted
from the server (backups live off the node). A single server on SQLite (.db):
SQLite's online backup when sqlite3 is on the node, otherwise k3s is stopped for
the moment of the copy and started again (the plan says so).

--keep N keeps the newest N backups of the cluster in the folder and removes
older ones (never the newest). rack rebuild restores from these.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			inv, o, err := nf.load(g)
			if err != nil {
				return err
			}
			ctx := c.Context()
			plan, err := k3s.PlanBackup(ctx, inv, o, bo)
			if err != nil {
				return fail(err)
			}
			if g.output != outputJSON {
				if err := plan.WriteText(g.stdout); err != nil {
					return fail(err)
				}
			}
			m, err := plan.Run(ctx)
			if err != nil {
				return fail(err)
			}
			path := plan.Out + "/" + m.File
			if g.output == outputJSON {
				return fail(writeJSON(g.stdout, map[string]any{"path": path, "manifest": m}))
			}
			fmt.Fprintf(g.stdout, "backup: %s (%d bytes, sha256 %s), token kept 0600 in %s\n", path, m.Size, m.SHA256, plan.Out+"/"+m.TokenFile)
			return nil
		},
	}
	nf.register(cmd)
	cmd.Flags().StringVar(&bo.Out, "out", "", "folder for the backups (default backups/<cluster>/ beside the inventory)")
	cmd.Flags().IntVar(&bo.Keep, "keep", 0, "keep only the newest N backups of the cluster in the folder (0: keep all)")
	cmd.Flags().StringVar(&bo.Node, "node", "", "server to take the backup on (default: the first server that runs k3s)")
	return cmd
}
