package k3s

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/homelab/rack/nodes"
)

// WriteText prints the plan as a table, one node a line, with why.
func (p *Plan) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "cluster %s, k3s %s\n", p.Cluster, p.Version)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tARCH\tACTION\tWHY")
	for _, np := range p.Nodes {
		why := strings.Join(np.Reasons, "; ")
		if why == "" {
			why = "up to date"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", np.Node, np.Role, dash(np.Arch), np.Action, why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := p.writeSteps(w); err != nil {
		return err
	}
	counts := map[Action]int{}
	for _, np := range p.Nodes {
		counts[np.Action]++
	}
	if p.Changes() == 0 && len(p.Problems()) == 0 {
		_, err := fmt.Fprintln(w, "no changes: every node is up to date")
		return err
	}
	var parts []string
	for _, a := range []Action{ActionInstall, ActionUpgrade, ActionReconfigure, ActionRestart, ActionNothing, ActionUnreachable, ActionRefused} {
		if counts[a] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[a], a))
		}
	}
	_, err := fmt.Fprintln(w, strings.Join(parts, ", "))
	return err
}

// writeSteps lists, per node, the steps `rack up` runs, each with its reason:
// the same values Apply runs.
func (p *Plan) writeSteps(w io.Writer) error {
	var b strings.Builder
	list := func(title string, steps []nodes.Step) {
		if len(steps) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s:\n", title)
		for i, s := range steps {
			fmt.Fprintf(&b, "  %d. %s\n", i+1, s.Name)
			if s.Why != "" {
				fmt.Fprintf(&b, "     why: %s\n", s.Why)
			}
		}
	}
	list("on this machine", p.Local)
	for _, np := range p.Nodes {
		if np.Changes() {
			list(np.Node, np.Steps)
		}
	}
	if b.Len() == 0 {
		return nil
	}
	_, err := io.WriteString(w, "\nsteps\n"+b.String()+"\n")
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
