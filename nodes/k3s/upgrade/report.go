package upgrade

import (
	"fmt"
	"io"
	"strings"

	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s/catalog"
)

// checkTitles describe each pre-flight check when it found nothing.
var checkTitles = []struct{ check, ok string }{
	{CheckReady, "every node is Ready"},
	{CheckCordoned, "no node is cordoned"},
	{CheckInventory, "every node is in the inventory"},
	{CheckPDB, "no PodDisruptionBudget guards pods on the nodes to drain"},
	{CheckLonghorn, "Longhorn is not installed"},
	{CheckCgroup, "no cgroup v1 host goes to k3s 1.35 or later without failCgroupV1: false"},
	{CheckRemovedAPI, "no object is written under an API version the path removes"},
}

// WriteText prints the execution as rack plan prints a plan: the path, the
// pre-flight (each check, and every finding with its fix), then every
// node's steps with their reasons, in the order they run.
func (e *Execution) WriteText(w io.Writer, at catalog.Date) error {
	if err := e.Plan.WriteText(w, at); err != nil {
		return err
	}
	fmt.Fprintln(w, "\npre-flight")
	by := map[string][]Finding{}
	for _, f := range e.Preflight {
		by[f.Check] = append(by[f.Check], f)
	}
	for _, c := range checkTitles {
		fs := by[c.check]
		if len(fs) == 0 {
			fmt.Fprintf(w, "  ok       %s\n", c.ok)
			continue
		}
		for _, f := range fs {
			mark := "note"
			switch {
			case f.Blocks && f.Forceable && e.force:
				mark = "FORCED"
			case f.Blocks:
				mark = "REFUSED"
			}
			fmt.Fprintf(w, "  %-8s %s\n", mark, f.Message)
			if f.Fix != "" && f.Blocks {
				fmt.Fprintf(w, "           fix: %s\n", f.Fix)
			}
		}
	}
	for _, warn := range e.Warnings {
		fmt.Fprintf(w, "  warning  %s\n", warn)
	}
	if len(e.Resume) == 0 && len(e.Runs) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nsteps")
	list := func(title string, steps []nodes.Step) {
		fmt.Fprintf(w, "%s:\n", title)
		for i, s := range steps {
			fmt.Fprintf(w, "  %d. %s\n", i+1, s.Name)
			if s.Why != "" {
				fmt.Fprintf(w, "     why: %s\n", s.Why)
			}
		}
	}
	for _, r := range e.Resume {
		list(r.Node+" (finishing an interrupted upgrade)", r.Steps)
	}
	for _, r := range e.Runs {
		list(fmt.Sprintf("%s (%s) → %s", r.Node, r.Role, r.Version), r.Steps)
	}
	_, err := fmt.Fprintln(w)
	return err
}

// Changes counts the node turns the execution runs.
func (e *Execution) Changes() int { return len(e.Resume) + len(e.Runs) }

// Summary is one line per refusal, for the error of a refused run.
func Summary(fs []Finding) string {
	var lines []string
	for _, f := range fs {
		lines = append(lines, f.Message+": "+f.Fix)
	}
	return strings.Join(lines, "\n  ")
}
