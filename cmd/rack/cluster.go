package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s"
	"github.com/homelab/rack/nodes/k3s/catalog"
	"github.com/homelab/rack/nodes/kube"
	"github.com/homelab/rack/stacks"
)

// loadInventory loads and validates; problems are printed to stderr, and an
// invalid inventory stops the command before anything is contacted.
func loadInventory(g *globals) (*inventory.Inventory, error) {
	inv, problems, err := inventory.Load(g.inventory)
	if err != nil {
		return nil, fail(err)
	}
	for _, p := range problems {
		fmt.Fprintln(g.stderr, p)
	}
	if problems.HasErrors() {
		return nil, fail(fmt.Errorf("%s is invalid: fix the problems above (rack inventory validate lists them)", g.inventory))
	}
	return inv, nil
}

// nodeFlags are the flags of commands that work on nodes over SSH.
type nodeFlags struct {
	concurrency int
	timeout     time.Duration
	catalog     string
}

func (f *nodeFlags) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&f.concurrency, "concurrency", 10, "nodes worked on at once")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 5*time.Minute, "how long to wait for each node to be Ready")
	cmd.Flags().StringVar(&f.catalog, "catalog", "", "read the k3s version catalog from FILE instead of rack's own (a minor such as v1.33 in the inventory means its newest release there)")
}

// load reads the inventory and the node options for it.
func (f *nodeFlags) load(g *globals) (*inventory.Inventory, k3s.Options, error) {
	inv, err := loadInventory(g)
	if err != nil {
		return nil, k3s.Options{}, err
	}
	o, err := f.options(g, inv)
	return inv, o, err
}

func (f *nodeFlags) options(g *globals, inv *inventory.Inventory) (k3s.Options, error) {
	if f.concurrency < 1 {
		return k3s.Options{}, fmt.Errorf("--concurrency %d: must be at least 1", f.concurrency)
	}
	if err := resolveMinor(g, inv, f.catalog); err != nil {
		return k3s.Options{}, fail(err)
	}
	o, err := k3s.NewOptions(inv)
	if err != nil {
		return o, fail(err)
	}
	o.ReadyTimeout = f.timeout
	o.FanOut = nodes.FanOutOptions{Concurrency: f.concurrency, Progress: nodes.NewProgress(g.stderr)}
	if g.verbose {
		o.FanOut.Connect.Output = g.stderr
	}
	return o, nil
}

// resolveMinor turns a minor in cluster.k3s.version (v1.33) into the
// newest release of that minor the catalog lists, and says so: the node
// commands install and compare exact releases.
func resolveMinor(g *globals, inv *inventory.Inventory, file string) error {
	v := inv.Cluster.K3s.Version
	if !inventory.IsK3sMinor(v) {
		return nil
	}
	c, origin, err := catalog.Open(file)
	if err != nil {
		return err
	}
	if origin.Warning != "" {
		fmt.Fprintln(g.stderr, "rack: "+origin.Warning)
	}
	exact, err := c.Resolve(v)
	if err != nil {
		return fmt.Errorf("%s: cluster.k3s.version: %w", inv.Where("cluster.k3s.version"), err)
	}
	fmt.Fprintf(g.stderr, "rack: cluster.k3s.version %s is k3s %s, the newest %s release in the catalog (%s)\n", v, exact, v, origin.Description)
	inv.Cluster.K3s.Version = exact.String()
	return nil
}

func newPlanCmd(g *globals) *cobra.Command {
	var nf nodeFlags
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what rack up would change on each node, and why; changes nothing",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			plan, _, _, err := planNodes(ctx, g, &nf)
			if err != nil {
				return err
			}
			if len(plan.Problems()) > 0 {
				return fail(errSilent)
			}
			return nil
		},
	}
	nf.register(cmd)
	return cmd
}

// planNodes is what plan and up share: load the inventory, gather every
// node's facts, print the plan.
func planNodes(ctx context.Context, g *globals, nf *nodeFlags) (*k3s.Plan, *inventory.Inventory, k3s.Options, error) {
	inv, o, err := nf.load(g)
	if err != nil {
		return nil, nil, o, err
	}
	plan, err := k3s.BuildPlan(ctx, inv, o)
	if err != nil {
		return nil, nil, o, fail(err)
	}
	if err := printPlan(g, plan); err != nil {
		return nil, nil, o, fail(err)
	}
	return plan, inv, o, nil
}

func printPlan(g *globals, plan *k3s.Plan) error {
	return printOut(g, plan, plan.WriteText)
}

// printOut writes v as JSON with -o json, else as text writes it.
func printOut(g *globals, v any, text func(io.Writer) error) error {
	if g.output == outputJSON {
		return writeJSON(g.stdout, v)
	}
	return text(g.stdout)
}

// platformUp runs the platform stacks through rack's kubeconfig and
// prints what they did: rack up, rack node add and rack rebuild end so.
func platformUp(ctx context.Context, g *globals, inv *inventory.Inventory, so stacks.Options) error {
	so.Kubeconfig = inv.State().Kubeconfig()
	res, err := stacks.Up(ctx, inv, so)
	if err != nil {
		return fail(err)
	}
	return fail(printStackResult(g, "up", res))
}

func newUpCmd(g *globals) *cobra.Command {
	var nf nodeFlags
	var nodesOnly, preview bool
	var backend string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Bootstrap every node, fetch the kubeconfig, then run the platform stacks",
		Long: `rack up brings every node to what the inventory says (k3s installed at the
inventory's version, configured, running and Ready), then layers the platform on
top with Pulumi (MetalLB, Longhorn, local volumes, Argo CD) through the
Automation API, with state under .rack/<cluster>/state.

It prints the node plan first and asks before changing anything (unless --yes).
Running it again on a converged rack changes nothing and uploads nothing.
Before touching any node it checks that the pulumi CLI and the kubernetes plugin
are installed (skipped with --nodes-only).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if nodesOnly && preview {
				return fmt.Errorf("--preview previews the platform stacks; it does not go with --nodes-only (use rack plan)")
			}
			ctx := c.Context()
			so := stacks.Options{Backend: backend, Progress: g.stderr}
			if !nodesOnly {
				// Fail in seconds, before any node changes, when Pulumi cannot run.
				if err := stacks.Check(ctx, so); err != nil {
					return fail(err)
				}
			}
			plan, inv, o, err := planNodes(ctx, g, &nf)
			if err != nil {
				return err
			}
			if !nodesOnly {
				// Every chart at hand (mirror, overrides) before any node changes.
				if err := stacks.CheckCharts(inv, g.stderr); err != nil {
					return fail(err)
				}
			}
			// Deleting what the inventory no longer has needs a yes.
			so.Confirm = func(rm stacks.Removal) error {
				if err := rm.WriteText(g.stderr); err != nil {
					return err
				}
				if g.yes {
					return nil
				}
				return confirm(g, "Go ahead?")
			}
			if preview {
				res, err := stacks.Preview(ctx, inv, so)
				if err != nil {
					return fail(err)
				}
				return fail(printStackResult(g, "preview", res))
			}
			if plan.Changes() > 0 && !g.yes {
				if err := confirm(g, fmt.Sprintf("Apply these changes to %d node(s)?", plan.Changes())); err != nil {
					return err
				}
			}
			out, err := k3s.Apply(ctx, plan, o)
			if out != nil {
				fmt.Fprintln(g.stderr)
				_ = nodes.WriteSummary(g.stderr, out.Results)
				if out.Kubeconfig != nil && o.Kubeconfig != "" {
					fmt.Fprintf(g.stderr, "kubeconfig: context %q in %s\n", inv.Cluster.Name, o.Kubeconfig)
				}
			}
			if err != nil {
				return fail(err)
			}
			if plan.Changes() == 0 {
				fmt.Fprintln(g.stdout, "no changes: the nodes are up to date")
			}
			if nodesOnly {
				return nil
			}
			if err := platformUp(ctx, g, inv, so); err != nil {
				return err
			}
			so.Kubeconfig = inv.State().Kubeconfig()
			return upApps(ctx, g, inv, so)
		},
	}
	nf.register(cmd)
	cmd.Flags().BoolVar(&nodesOnly, "nodes-only", false, "stop after the nodes (no platform stacks)")
	cmd.Flags().BoolVar(&preview, "preview", false, "show the node plan and the platform stacks' preview; change nothing")
	cmd.Flags().StringVar(&backend, "backend", "", "Pulumi state backend URL (default file://.rack/<cluster>/state beside the inventory)")
	return cmd
}

// printStackResult shows what the stacks did (or would do) and their outputs.
func printStackResult(g *globals, op string, res stacks.Result) error {
	if g.output == outputJSON {
		return writeJSON(g.stdout, map[string]any{"stacks": op, "changes": res.Changes, "outputs": res.Outputs})
	}
	keys := make([]string, 0, len(res.Changes))
	for k := range res.Changes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", res.Changes[k], k))
	}
	fmt.Fprintf(g.stdout, "platform stacks (%s): %s\n", op, strings.Join(parts, ", "))
	names := make([]string, 0, len(res.Outputs))
	for k := range res.Outputs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(g.stdout, "  %s: %v\n", k, res.Outputs[k])
	}
	return nil
}

// confirm asks on the terminal; without one, --yes is required.
func confirm(g *globals, question string) error {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return fmt.Errorf("not asking for confirmation without a terminal: pass --yes (or RACK_YES=1) to apply")
	}
	fmt.Fprintf(g.stderr, "%s [y/N] ", question)
	answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		return fail(fmt.Errorf("cancelled: nothing was changed"))
	}
	return nil
}

func newStatusCmd(g *globals) *cobra.Command {
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every node (role, arch, k3s version, Ready, cordoned) and every addon (chart, release status, ready pods)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			inv, err := loadInventory(g)
			if err != nil {
				return err
			}
			ctx := c.Context()
			st, err := readStatus(ctx, inv, kubeconfig)
			if err != nil {
				return fail(err)
			}
			if err := printOut(g, st, st.WriteText); err != nil {
				return fail(err)
			}
			if !st.Healthy() {
				return fail(fmt.Errorf("not every node is Ready"))
			}
			for _, a := range st.Addons {
				if !a.Healthy() {
					return fail(fmt.Errorf("addon %s: %s", a.Name, a.Problem))
				}
			}
			return nil
		},
	}
	kubeconfigFlag(cmd, &kubeconfig)
	return cmd
}

// clusterStatus is rack status: the nodes and support window (statusReport,
// its JSON fields unchanged) and the addons ("addons").
type clusterStatus struct {
	*statusReport
	Addons []stacks.AddonStatus `json:"addons"`
}

func (s *clusterStatus) WriteText(w io.Writer) error {
	if err := s.statusReport.WriteText(w); err != nil {
		return err
	}
	if len(s.Addons) > 0 {
		fmt.Fprintln(w)
	}
	return stacks.WriteAddonsText(w, s.Addons)
}

// readStatus reads the Nodes and the addons through rack's own kubeconfig
// (.rack/<cluster>/kubeconfig), or the context named after the cluster in
// the file --kubeconfig names.
func readStatus(ctx context.Context, inv *inventory.Inventory, kubeconfig string) (*clusterStatus, error) {
	nodes, cs, err := readNodeStatus(ctx, inv, kubeconfig)
	if err != nil {
		return nil, err
	}
	addons, err := stacks.ReadAddons(ctx, cs, inv)
	if err != nil {
		return nil, err
	}
	return &clusterStatus{statusReport: nodes, Addons: addons}, nil
}

func readNodeStatus(ctx context.Context, inv *inventory.Inventory, kubeconfig string) (*statusReport, kubernetes.Interface, error) {
	kc, err := clusterContext(inv, kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	cs, err := kc.Clientset()
	if err != nil {
		return nil, nil, err
	}
	st, err := withSupport(inv)(kube.ReadStatus(ctx, cs, inv))
	return st, cs, err
}
