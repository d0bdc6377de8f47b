package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes/kube"
	"github.com/homelab/rack/stacks"
)

// appFlags are the flags every app command shares.
type appFlags struct {
	kubeconfig string
	backend    string
	out        string
	commit     bool
}

func (f *appFlags) register(cmd *cobra.Command, delivers bool) {
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig holding a context named after the cluster (default: the one rack up keeps in .rack/<cluster>/)")
	cmd.Flags().StringVar(&f.backend, "backend", "", "Pulumi state backend URL of the stacks (default file://.rack/<cluster>/state beside the inventory)")
	if delivers {
		cmd.Flags().StringVar(&f.out, "out", "", "with addons.argocd.deliverApps: the GitOps work tree rack render writes the new release to")
		cmd.Flags().BoolVar(&f.commit, "commit", false, "with --out: commit the rendered files when the folder is a git work tree")
	}
}

func newAppCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "app",
		Short: "Release the inventory's apps: status, promote, rollback",
		Long: `Changing an app's image and running rack up deploys the new version as a
candidate beside the stable one; it does not release it. rack app promote moves
traffic to it one step at a time (canary weight, blue-green flip, A/B or shadow
to the full release) after its health gates pass; rack app rollback returns all
traffic to the stable version and removes the candidate.`,
		Args: exactArgs(0, "a subcommand (status, promote, rollback)"),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAppStatusCmd(g), newAppPromoteCmd(g), newAppRollbackCmd(g))
	return cmd
}

// appRunner binds an inventory to the apps stack (or, with Argo CD
// delivering, the GitOps folder) and the cluster's API.
func appRunner(ctx context.Context, g *globals, f *appFlags, needStore bool) (*release.Runner, error) {
	inv, err := loadInventory(g)
	if err != nil {
		return nil, err
	}
	gate, err := appGate(inv, f.kubeconfig)
	if err != nil {
		return nil, fail(err)
	}
	opts := stacks.AppsOptions{Options: stacks.Options{Backend: f.backend, Kubeconfig: inv.State().Kubeconfig()}, Notes: g.stderr}
	if g.verbose {
		opts.Progress = g.stderr
	}
	// With needStore, the store's Load checks first that Pulumi can
	// deliver: a promote fails in seconds, before any gate, when it
	// cannot. Apply moves the traffic, then runs the Pulumi update.
	var store release.Store = &stacks.AppsStore{Inventory: inv, Options: opts, Delivers: needStore}
	if !stacks.DeliversApps(inv) && needStore {
		if f.out == "" {
			return nil, fmt.Errorf("%s: addons.argocd.deliverApps is on, so Argo CD delivers the apps from rack render's output: give --out DIR (the GitOps work tree) to render the new release there", inv.Where("addons.argocd.deliverApps"))
		}
		store = &gitopsStore{g: g, inv: inv, dir: f.out, commit: f.commit, record: store}
	} else if f.out != "" {
		return nil, fmt.Errorf("--out: Pulumi delivers the apps (addons.argocd.deliverApps is off); there is nothing to render")
	}
	return &release.Runner{Inventory: inv, Store: store, Gate: gate, Log: g.stderr, Verbose: g.verbose}, nil
}

// appGate reads the cluster through rack's kubeconfig, or the context
// named after the cluster in --kubeconfig.
func appGate(inv *inventory.Inventory, kubeconfig string) (*release.Gate, error) {
	if kubeconfig == "" {
		kubeconfig = inv.State().Kubeconfig()
	}
	kc, err := kube.LoadContext(kubeconfig, inv.Cluster.Name)
	if err != nil {
		return nil, err
	}
	cs, err := kc.Clientset()
	if err != nil {
		return nil, err
	}
	return &release.Gate{Client: cs}, nil
}

func newAppStatusCmd(g *globals) *cobra.Command {
	var f appFlags
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show an app's strategy, release state (stable, candidate, step or active colour) and health",
		Long: `Prints the app's release state as the apps stack keeps it (the same state a
re-run of rack up starts from) and its health read from the cluster: the stable
Deployment, and the candidate's when there is one, Available. Exits 1 when the
app is not healthy.`,
		Args: exactArgs(1, "the app's name"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			r, err := appRunner(ctx, g, &f, false)
			if err != nil {
				return err
			}
			st, err := r.Status(ctx, args[0])
			if err != nil {
				return fail(err)
			}
			if g.output == outputJSON {
				err = writeJSON(g.stdout, st)
			} else {
				app, _ := findApp(r.Inventory, args[0])
				err = writeAppStatus(g.stdout, app, st)
			}
			if err != nil {
				return fail(err)
			}
			if !st.Healthy {
				return fail(fmt.Errorf("%s is not healthy: %s", st.Name, st.Reason))
			}
			return nil
		},
	}
	f.register(cmd, false)
	return cmd
}

func newAppPromoteCmd(g *globals) *cobra.Command {
	var f appFlags
	var auto bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "promote NAME",
		Short: "Advance an app's release one step after its health gates pass",
		Long: `Before the step, the gates read the cluster: the candidate Deployment is
Available, none of its pods restarted since the last step, and strategy.check
(when set) answers 2xx through the app's own route (Traefik with the
X-Rack-Preview header, reaching the candidate; the preview Service's
LoadBalancer address for an app without a host). Then the release moves one
step: the next canary weight, the blue-green flip, A/B or shadow to the full
release.

With --auto it walks every step, waiting --interval between them, and when a
gate fails it rolls the release back by itself and exits 1 with the reason.`,
		Args: exactArgs(1, "the app's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("interval") && !auto {
				return fmt.Errorf("--interval is the wait between the steps of --auto: add --auto")
			}
			if interval < 0 {
				return fmt.Errorf("--interval %v: must not be negative", interval)
			}
			ctx := cmd.Context()
			r, err := appRunner(ctx, g, &f, true)
			if err != nil {
				return err
			}
			st, err := r.Promote(ctx, args[0], auto, interval)
			if err != nil {
				var gerr *release.GateError
				if errors.As(err, &gerr) {
					_ = printRelease(ctx, g, r, args[0], st)
				}
				return fail(err)
			}
			return fail(printRelease(ctx, g, r, args[0], st))
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVar(&auto, "auto", false, "walk every step, rolling back by itself when a gate fails")
	cmd.Flags().DurationVar(&interval, "interval", time.Minute, "with --auto: how long each step runs before the next gate")
	return cmd
}

func newAppRollbackCmd(g *globals) *cobra.Command {
	var f appFlags
	cmd := &cobra.Command{
		Use:   "rollback NAME",
		Short: "Return all traffic to the stable version and remove the candidate",
		Long: `The candidate's image is remembered: rack up does not deploy it again while the
inventory still names it. When a rack up failed before the candidate became
Available (nothing was recorded), rollback marks the inventory's image rolled
back and removes what that run left of it.`,
		Args: exactArgs(1, "the app's name"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			r, err := appRunner(ctx, g, &f, true)
			if err != nil {
				return err
			}
			st, err := r.Rollback(ctx, args[0])
			if err != nil {
				return fail(err)
			}
			return fail(printRelease(ctx, g, r, args[0], st))
		},
	}
	f.register(cmd, true)
	return cmd
}

func findApp(inv *inventory.Inventory, name string) (inventory.App, bool) {
	for _, a := range inv.Apps {
		if a.Name == name {
			return a, true
		}
	}
	return inventory.App{}, false
}

// printRelease prints where a release stands after a command, with the
// app's health read from the cluster now.
func printRelease(ctx context.Context, g *globals, r *release.Runner, name string, st release.State) error {
	app, ok := findApp(r.Inventory, name)
	if !ok {
		return nil
	}
	s, err := apps.StatusOf(app, st.Release)
	if err != nil {
		return err
	}
	out := release.Status{Status: s}
	out.Healthy, out.Reason = r.Gate.Health(ctx, app, st)
	if g.output == outputJSON {
		return writeJSON(g.stdout, out)
	}
	return writeAppStatus(g.stdout, app, out)
}

// writeAppStatus is the text form of rack app status.
func writeAppStatus(w io.Writer, app inventory.App, st release.Status) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n", st.Name, st.Strategy)
	fmt.Fprintf(&b, "  stable:    %s\n", st.Stable)
	if st.Candidate != nil {
		fmt.Fprintf(&b, "  candidate: %s", *st.Candidate)
		if st.Step != nil {
			fmt.Fprintf(&b, " (step %d of %d)", *st.Step+1, len(app.Strategy.Steps))
		}
		b.WriteString("\n")
	} else {
		b.WriteString("  candidate: none\n")
	}
	if st.Active != nil {
		fmt.Fprintf(&b, "  active:    %s\n", *st.Active)
	}
	fmt.Fprintf(&b, "  weights:   stable %d%%, candidate %d%%\n", st.Weights.Stable, st.Weights.Candidate)
	if st.RolledBack != "" {
		fmt.Fprintf(&b, "  rolled back: %s (not deployed again while the inventory names it)\n", st.RolledBack)
	}
	switch {
	case st.Healthy:
		b.WriteString("  healthy:   yes\n")
	case st.Reason != "":
		fmt.Fprintf(&b, "  healthy:   no: %s\n", st.Reason)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// envReadyTimeout bounds how long rack up waits for an app's Deployments to
// be Available before its traffic moves (default stacks.DefaultReadyTimeout);
// past it rack up fails, and clients stay where they were.
const envReadyTimeout = "RACK_APPS_READY_TIMEOUT"

// upApps is rack up's apps phase, after the platform stacks: deploy the
// inventory's images (a changed image becomes a candidate) and record the
// release states with the apps stack. One call from rack up.
func upApps(ctx context.Context, g *globals, inv *inventory.Inventory, so stacks.Options) error {
	opts := stacks.AppsOptions{Options: so, Notes: g.stderr}
	if v := os.Getenv(envReadyTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s=%q: give a duration like 5m", envReadyTimeout, v)
		}
		opts.ReadyTimeout = d
	}
	res, err := stacks.UpApps(ctx, inv, opts)
	if err != nil {
		return fail(fmt.Errorf("apps stack %s: %w", stacks.AppsStack(inv), err))
	}
	if g.output == outputJSON {
		return nil // the platform's JSON document is rack up's answer
	}
	fmt.Fprintf(g.stdout, "apps stack (up): %s\n", changes(res.Changes))
	names := make([]string, 0, len(res.States))
	for n := range res.States {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		app, _ := findApp(inv, n)
		fmt.Fprintf(g.stdout, "  %s\n", describeState(app, res.States[n]))
	}
	if !stacks.DeliversApps(inv) {
		fmt.Fprintln(g.stderr, "addons.argocd.deliverApps is on: run rack render --out DIR --commit to hand these releases to Argo CD")
	}
	return nil
}

func changes(c map[string]int) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", c[k], k))
	}
	return strings.Join(parts, ", ")
}

// describeState is one line: the app, its stable image and its candidate.
func describeState(app inventory.App, st release.State) string {
	s, err := apps.StatusOf(app, st.Release)
	if err != nil || st.Candidate == "" {
		return fmt.Sprintf("%s: %s", app.Name, st.Stable)
	}
	switch {
	case s.Step != nil:
		return fmt.Sprintf("%s: %s, candidate %s at %d%% (step %d of %d): rack app promote %s", app.Name, st.Stable, st.Candidate, s.Weights.Candidate, *s.Step+1, len(app.Strategy.Steps), app.Name)
	default:
		return fmt.Sprintf("%s: %s, candidate %s (%s): rack app promote %s", app.Name, st.Stable, st.Candidate, s.Strategy, app.Name)
	}
}
