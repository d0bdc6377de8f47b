package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/homelab/rack/inventory"
)

func newInventoryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inventory",
		Short: "Work with the inventory file",
		Args:  exactArgs(0, "a subcommand: validate"),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate",
		Short: "Load and validate the inventory; list every problem as FILE:LINE: path.to.key: message",
		Args:  exactArgs(0, "no arguments (the file comes from -i)"),
		RunE: func(*cobra.Command, []string) error {
			inv, problems, err := inventory.Load(g.inventory)
			if err != nil {
				problems = inventory.Problems{{File: g.inventory, Severity: inventory.SeverityError, Message: err.Error()}}
			}
			if g.output == outputJSON {
				if err := writeJSON(g.stdout, validateResult{Valid: !problems.HasErrors(), Problems: nonNil(problems)}); err != nil {
					return fail(err)
				}
			} else {
				printValidation(g.stdout, g.inventory, inv, problems)
			}
			if problems.HasErrors() {
				return fail(errSilent)
			}
			return nil
		},
	})
	return cmd
}

type validateResult struct {
	Valid    bool               `json:"valid"`
	Problems inventory.Problems `json:"problems"`
}

func nonNil(p inventory.Problems) inventory.Problems {
	if p == nil {
		return inventory.Problems{}
	}
	return p
}

func printValidation(w io.Writer, file string, inv *inventory.Inventory, problems inventory.Problems) {
	for _, p := range problems {
		fmt.Fprintln(w, p)
	}
	errs, warns := problems.Count(inventory.SeverityError), problems.Count(inventory.SeverityWarning)
	if errs > 0 {
		fmt.Fprintf(w, "%s: invalid: %d error(s), %d warning(s)\n", file, errs, warns)
		return
	}
	if inv == nil {
		return
	}
	servers := len(inv.Servers())
	fmt.Fprintf(w, "%s: valid: cluster %s, %d node(s) (%d server, %d agent), %d app(s)", file,
		inv.Cluster.Name, len(inv.Nodes), servers, len(inv.Nodes)-servers, len(inv.Apps))
	if warns > 0 {
		fmt.Fprintf(w, ", %d warning(s)", warns)
	}
	fmt.Fprintln(w)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
