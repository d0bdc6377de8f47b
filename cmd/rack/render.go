package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/stacks"
)

func newRenderCmd(g *globals) *cobra.Command {
	var out, backend string
	var commit bool
	cmd := &cobra.Command{
		Use:   "render",
		Short: "Write the apps' manifests for their current release state, for GitOps through Argo CD",
		Long: `rack render writes every inventory app's objects, for the release state the apps
stack keeps (what rack up deployed and rack app promote moved), to --out DIR:
<path>/<app>/<kind>-<name>.yaml, and with addons.argocd one child Argo CD
Application per app, <path>/<app>.yaml, under the root app-of-apps folder
(addons.argocd.path). They are the objects the Pulumi apps stack applies.

Env values the inventory takes from ${VAR} are never written in plain text: the
app's Secret is written as <path>/<app>/secret-<app>-env.yaml.example, a
placeholder Argo CD does not apply, which says how to seal the values.

Files rack render wrote before that no longer belong are removed; other files
are left alone. With --commit, the changes are committed when DIR is a git work
tree.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out DIR is required: the GitOps work tree (the repository addons.argocd.repo names)")
			}
			inv, err := loadInventory(g)
			if err != nil {
				return err
			}
			ctx := c.Context()
			// The saved states are read through the pulumi CLI; the
			// kubernetes plugin is not needed.
			opts := stacks.AppsOptions{Options: stacks.Options{Backend: backend}}
			saved, err := stacks.Releases(ctx, inv, opts)
			if err != nil {
				return fail(err)
			}
			states, err := currentStates(inv, saved)
			if err != nil {
				return fail(err)
			}
			res, err := renderRepo(ctx, inv, states, out, commit)
			if err != nil {
				return fail(err)
			}
			return fail(printRender(g, res))
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the folder (a GitOps work tree) to write to")
	cmd.Flags().BoolVar(&commit, "commit", false, "commit the rendered files when --out is a git work tree")
	cmd.Flags().StringVar(&backend, "backend", "", "Pulumi state backend URL of the stacks (default file://.rack/<cluster>/state beside the inventory)")
	return cmd
}

// currentStates are the saved states, and for an app never deployed, the
// state rack up would give it.
func currentStates(inv *inventory.Inventory, saved map[string]release.State) (map[string]release.State, error) {
	fresh, err := release.Deploy(inv, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]release.State{}
	for _, app := range inv.Apps {
		if st, ok := saved[app.Name]; ok && st.Stable != "" {
			out[app.Name] = st
		} else {
			out[app.Name] = fresh[app.Name]
		}
	}
	return out, nil
}

// renderResult is what rack render did.
type renderResult struct {
	Out     string   `json:"out"`
	Path    string   `json:"path"`
	Files   []string `json:"files"`
	Changed []string `json:"changed"`
	// Secrets lists the placeholder Secrets to seal.
	Secrets   []string `json:"secrets"`
	Committed bool     `json:"committed"`
}

// renderRepo writes the apps of inv in states under dir and, with commit,
// commits them.
func renderRepo(ctx context.Context, inv *inventory.Inventory, states map[string]release.State, dir string, commit bool) (*renderResult, error) {
	opts := apps.RepoOptions{}
	if a := inv.Addons.ArgoCD; a != nil {
		opts.Path, opts.RepoURL, opts.Revision = a.Path, a.Repo, a.Revision
	}
	if opts.Path == "" {
		opts.Path = apps.DefaultRepoPath
	}
	var list []apps.RepoApp
	for i, app := range inv.Apps {
		st, ok := states[app.Name]
		if !ok {
			continue
		}
		list = append(list, apps.RepoApp{App: app, Release: st.Release, SecretEnv: inv.EnvFromEnvironment(i)})
	}
	files, err := apps.RenderRepo(list, opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	changed, err := apps.WriteRepo(dir, opts.Path, files)
	if err != nil {
		return nil, err
	}
	res := &renderResult{Out: dir, Path: opts.Path, Changed: changed, Files: []string{}, Secrets: []string{}}
	for _, f := range files {
		res.Files = append(res.Files, f.Path)
		if strings.HasSuffix(f.Path, apps.ExampleSuffix) {
			res.Secrets = append(res.Secrets, f.Path)
		}
	}
	if res.Changed == nil {
		res.Changed = []string{}
	}
	if commit {
		if res.Committed, err = gitCommit(ctx, dir, opts.Path, commitMessage(inv, states)); err != nil {
			return res, err
		}
	}
	return res, nil
}

func printRender(g *globals, res *renderResult) error {
	for _, s := range res.Secrets {
		fmt.Fprintf(g.stderr, "%s: a placeholder for secret env values: seal them as the file says (Argo CD does not apply it)\n", s)
	}
	if g.output == outputJSON {
		return writeJSON(g.stdout, res)
	}
	fmt.Fprintf(g.stdout, "rendered %d file(s) under %s, %d changed", len(res.Files), filepath.Join(res.Out, filepath.FromSlash(res.Path)), len(res.Changed))
	if res.Committed {
		fmt.Fprint(g.stdout, ", committed")
	}
	fmt.Fprintln(g.stdout)
	for _, c := range res.Changed {
		fmt.Fprintf(g.stdout, "  %s\n", c)
	}
	return nil
}

func commitMessage(inv *inventory.Inventory, states map[string]release.State) string {
	var lines []string
	for _, app := range inv.Apps {
		if st, ok := states[app.Name]; ok {
			lines = append(lines, describeState(app, st))
		}
	}
	sort.Strings(lines)
	return fmt.Sprintf("rack render: apps of %s\n\n%s\n", inv.Cluster.Name, strings.Join(lines, "\n"))
}

// gitCommit commits what changed under path in the git work tree dir, and
// reports whether there was anything to commit. git runs with its
// arguments as they are, never through a shell.
func gitCommit(ctx context.Context, dir, path, message string) (bool, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return strings.TrimSpace(out.String()), err
	}
	if out, err := git("rev-parse", "--is-inside-work-tree"); err != nil || out != "true" {
		return false, fmt.Errorf("--commit: %s is not a git work tree (%s): git init it, or clone the GitOps repository there, or leave out --commit", dir, firstLine(out))
	}
	if out, err := git("add", "--all", "--", path); err != nil {
		return false, fmt.Errorf("git add in %s: %v: %s", dir, err, out)
	}
	_, err := git("diff", "--cached", "--quiet", "--", path)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return false, nil // nothing changed
	case !errors.As(err, &exit) || exit.ExitCode() != 1:
		return false, fmt.Errorf("git diff in %s: %v", dir, err)
	}
	if out, err := git("commit", "--quiet", "-m", message, "--", path); err != nil {
		return false, fmt.Errorf("git commit in %s: %v: %s (set user.name and user.email with git config, or commit yourself)", dir, err, out)
	}
	return true, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// gitopsStore is the release.Store of an inventory whose apps Argo CD
// delivers: Apply renders the states into the GitOps folder (and commits),
// then records them with the apps stack (which delivers no objects).
type gitopsStore struct {
	g      *globals
	inv    *inventory.Inventory
	dir    string
	commit bool
	record release.Store
}

func (s *gitopsStore) Load(ctx context.Context) (map[string]release.State, error) {
	return s.record.Load(ctx)
}

func (s *gitopsStore) Apply(ctx context.Context, states map[string]release.State) error {
	res, err := renderRepo(ctx, s.inv, states, s.dir, s.commit)
	if err != nil {
		return err
	}
	if err := printRender(&globals{stdout: s.g.stderr, stderr: s.g.stderr}, res); err != nil {
		return err
	}
	if !res.Committed && len(res.Changed) > 0 {
		fmt.Fprintf(s.g.stderr, "commit and push %s: Argo CD delivers the release from the repository, not from this folder\n", s.dir)
	}
	return s.record.Apply(ctx, states)
}
