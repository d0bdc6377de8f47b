package stacks

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes"
	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optpreview"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optup"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/inventory"
)

// Versions rack's stacks are built and tested against.
const (
	// PulumiVersion is the pulumi CLI scripts/build-pulumi.sh builds.
	PulumiVersion = "3.259.0"
	// KubernetesPluginVersion is the pulumi-resource-kubernetes plugin the
	// pulumi-kubernetes SDK in go.mod asks the engine for.
	KubernetesPluginVersion = "4.30.0"
)

// Project is the Pulumi project name (also in Pulumi.yaml).
const Project = "rack"

// EnvPassphrase overrides the generated passphrase of the secrets provider.
const EnvPassphrase = "RACK_PULUMI_PASSPHRASE"

// Files under the inventory's state dir (.rack/<cluster>).
const (
	PassphraseFile = "pulumi-passphrase"
	KubeconfigFile = "kubeconfig"
	stateSubdir    = "state"  // the file:// backend
	workSubdir     = "pulumi" // Pulumi.yaml and Pulumi.<stack>.yaml (salt)
)

// Options configure Up, Preview and Check.
type Options struct {
	// Kubeconfig is the cluster's admin kubeconfig (default
	// <state dir>/kubeconfig, written by rack up's node phase).
	Kubeconfig string
	// Backend is the Pulumi state backend URL (default
	// file://<state dir>/state).
	Backend string
	// Progress receives the engine's progress; nil discards it.
	Progress io.Writer
	// PulumiHome is where the CLI keeps plugins (default its own, ~/.pulumi).
	PulumiHome string
	// Confirm is asked, with the list, before Up deletes what the
	// inventory no longer has (an addon, a pool, a volume). nil, or an
	// error from it, refuses such a run with a *RemovalError and changes
	// nothing.
	Confirm func(Removal) error

	// webhookRetry bounds the retries of MetalLB's webhook (zero: default).
	webhookRetry retryPolicy
}

// Result is the outcome of Up or Preview.
type Result struct {
	// Outputs are the stack outputs after Up; secret values read "[secret]".
	Outputs map[string]any
	// Changes counts resources per operation (create, update, same, …).
	Changes map[string]int
}

// MissingError says that a tool rack needs is not installed, and how to get it.
type MissingError struct {
	What string // the pulumi CLI, the kubernetes plugin
	How  string
}

func (e *MissingError) Error() string { return e.What + " is missing: " + e.How }

// Check verifies within a second or so, before anything changes, that
// Up and Preview can run: the pulumi CLI is on PATH and new enough, and the
// kubernetes provider plugin the program needs is installed.
func Check(ctx context.Context, opts Options) error {
	_, err := check(ctx, opts, true)
	return err
}

// Up brings the cluster's platform in line with the inventory. It checks
// the charts first; reads the cluster back (refresh), so what was changed
// or deleted by hand is noticed; finishes what an interrupted run left
// pending; and asks opts.Confirm before deleting anything.
func Up(ctx context.Context, inv *inventory.Inventory, opts Options) (Result, error) {
	r, err := checkedPlatformRun(inv, opts)
	if err != nil {
		return Result{}, err
	}
	return r.up(ctx, opts)
}

// Preview shows what Up would change, changing nothing.
func Preview(ctx context.Context, inv *inventory.Inventory, opts Options) (Result, error) {
	r, err := checkedPlatformRun(inv, opts)
	if err != nil {
		return Result{}, err
	}
	return r.preview(ctx, opts)
}

// checkedPlatformRun is the platform stack's run once every chart it needs
// is known to be there.
func checkedPlatformRun(inv *inventory.Inventory, opts Options) (*run, error) {
	if err := CheckCharts(inv, progress(opts)); err != nil {
		return nil, err
	}
	return platformRun(inv, opts)
}

// run is one inline program bound to a stack in a state dir.
type run struct {
	stateDir string
	stack    string
	program  pulumi.RunFunc
	// needsKubernetes makes Check look for the kubernetes plugin first.
	needsKubernetes bool
	// kubeconfig of the cluster, for what rack does beside the engine
	// (removals, recovery); nil for programs without a cluster.
	kubeconfig []byte
}

// platformRun binds the rack's program to its cluster: an explicit provider
// whose kubeconfig is a secret, so the admin credentials are encrypted in
// the state and never pass through process arguments.
func platformRun(inv *inventory.Inventory, opts Options) (*run, error) {
	if inv == nil || inv.Cluster.Name == "" {
		return nil, errors.New("stacks: the inventory names no cluster")
	}
	kubeconfig, err := readKubeconfig(inv, opts)
	if err != nil {
		return nil, err
	}
	return &run{
		stateDir:        inv.StateDir(),
		stack:           inv.Cluster.Name,
		needsKubernetes: true,
		kubeconfig:      kubeconfig,
		program: func(ctx *pulumi.Context) error {
			k8s, err := kubernetes.NewProvider(ctx, "rack", &kubernetes.ProviderArgs{
				Kubeconfig: pulumi.ToSecret(pulumi.String(string(kubeconfig))).(pulumi.StringOutput),
			})
			if err != nil {
				return err
			}
			_, err = deploy(ctx, inv, pulumi.Providers(k8s))
			return err
		},
	}, nil
}

func (r *run) up(ctx context.Context, opts Options) (Result, error) {
	st, err := r.open(ctx, opts)
	if err != nil {
		return Result{}, err
	}
	if r.kubeconfig != nil {
		if err := r.prepare(ctx, st, opts); err != nil {
			return Result{}, err
		}
	}
	w := progress(opts)
	var res auto.UpResult
	answers := func(ctx context.Context) error {
		_, dyn, err := kubeClients(r.kubeconfig)
		if err != nil {
			return err
		}
		return metalLBAnswers(ctx, dyn)
	}
	err = retryWebhook(ctx, opts.webhookRetry.orDefault(), w, answers, func() error {
		// Refresh first: a release or object deleted or changed by hand is
		// seen, and put back, instead of trusted from the last run's state.
		res, err = st.Up(ctx, optup.Refresh(), optup.ProgressStreams(w), optup.ErrorProgressStreams(w))
		return err
	})
	if err != nil {
		return Result{}, whatItWaitedFor(ctx, explain(fmt.Errorf("pulumi up of stack %s: %w", r.stack, err), opts), r.kubeconfig)
	}
	out := Result{Outputs: map[string]any{}, Changes: map[string]int{}}
	for k, v := range res.Outputs {
		out.Outputs[k] = v.Value
		if v.Secret {
			out.Outputs[k] = "[secret]"
		}
	}
	if c := res.Summary.ResourceChanges; c != nil {
		for op, n := range *c {
			out.Changes[op] = n
		}
	}
	return out, nil
}

func (r *run) preview(ctx context.Context, opts Options) (Result, error) {
	st, err := r.open(ctx, opts)
	if err != nil {
		return Result{}, err
	}
	w := progress(opts)
	res, err := st.Preview(ctx, optpreview.Refresh(), optpreview.ProgressStreams(w), optpreview.ErrorProgressStreams(w))
	if err != nil {
		return Result{}, explain(fmt.Errorf("pulumi preview of stack %s: %w", r.stack, err), opts)
	}
	out := Result{Changes: map[string]int{}}
	for op, n := range res.ChangeSummary {
		out.Changes[string(op)] = n
	}
	return out, nil
}

// open checks the tools, then selects (or creates) the stack in a local
// workspace under the state dir.
func (r *run) open(ctx context.Context, opts Options) (auto.Stack, error) {
	cli, err := check(ctx, opts, r.needsKubernetes)
	if err != nil {
		return auto.Stack{}, err
	}
	secret, err := passphrase(r.stateDir)
	if err != nil {
		return auto.Stack{}, err
	}
	backend, err := backendURL(r.stateDir, opts)
	if err != nil {
		return auto.Stack{}, err
	}
	if dir, ok := fileBackendDir(backend); ok && opts.Backend == "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return auto.Stack{}, err
		}
	}
	// A lock left by a run that was killed would refuse every later one.
	if err := clearStaleLocks(backend, Project, r.stack, progress(opts)); err != nil {
		return auto.Stack{}, err
	}
	workDir := filepath.Join(r.stateDir, workSubdir)
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return auto.Stack{}, err
	}
	if stateFile(backend, Project, r.stack) != "" {
		cli.existing = map[string]bool{r.stack: true}
	}
	wsOpts := []auto.LocalWorkspaceOption{
		auto.Pulumi(cli),
		auto.WorkDir(workDir),
		auto.Project(workspace.Project{
			Name:    Project,
			Runtime: workspace.NewProjectRuntimeInfo("go", nil),
		}),
		auto.SecretsProvider("passphrase"),
		// The passphrase reaches the CLI through its environment only: the
		// workspace never puts it on a command line.
		auto.EnvVars(map[string]string{
			"PULUMI_CONFIG_PASSPHRASE": secret,
			"PULUMI_BACKEND_URL":       backend,
			"PULUMI_SKIP_UPDATE_CHECK": "true",
			// Racks are often offline: a missing plugin is Check's business,
			// not a download that times out in the middle of an update.
			"PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
			// A pulumi-resource-kubernetes on PATH would win over the plugin
			// cache whatever its version: the engine must load exactly the
			// version Check found.
			envIgnoreAmbient: "true",
		}),
	}
	if opts.PulumiHome != "" {
		wsOpts = append(wsOpts, auto.PulumiHome(opts.PulumiHome))
	}
	st, err := auto.UpsertStackInlineSource(ctx, r.stack, Project, r.program, wsOpts...)
	if err != nil {
		return auto.Stack{}, explain(fmt.Errorf("open stack %s in %s: %w", r.stack, backend, err), opts)
	}
	return st, nil
}

// backendURL is where the stacks' state lives: opts.Backend, or the file
// backend in the state dir.
func backendURL(stateDir string, opts Options) (string, error) {
	if opts.Backend != "" {
		return opts.Backend, nil
	}
	dir, err := filepath.Abs(filepath.Join(stateDir, stateSubdir))
	if err != nil {
		return "", err
	}
	return "file://" + filepath.ToSlash(dir), nil
}

// fileBackendDir is the folder of a file:// backend; ok is false for any
// other backend.
func fileBackendDir(backend string) (dir string, ok bool) {
	dir, ok = strings.CutPrefix(backend, "file://")
	return filepath.FromSlash(dir), ok
}

func progress(opts Options) io.Writer {
	if opts.Progress == nil {
		return io.Discard
	}
	return opts.Progress
}

// check finds the pulumi CLI and, when asked, the kubernetes plugin.
func check(ctx context.Context, opts Options, kubernetesPlugin bool) (*cliRunner, error) {
	path, err := exec.LookPath("pulumi")
	if err != nil {
		return nil, &MissingError{
			What: "the pulumi CLI",
			How: fmt.Sprintf("rack runs its stacks through it. Install v%[1]s with "+
				"`curl -fsSL https://get.pulumi.com | sh -s -- --version %[1]s` and add ~/.pulumi/bin to PATH, "+
				"or build it from rack's source with scripts/build-pulumi.sh and put the folder it prints first on PATH", PulumiVersion),
		}
	}
	cli, err := newCLIRunner(path)
	if err != nil {
		return nil, &MissingError{
			What: "a usable pulumi CLI",
			How:  fmt.Sprintf("%v: install v%s (or newer) as described in the README, or run scripts/build-pulumi.sh", err, PulumiVersion),
		}
	}
	if kubernetesPlugin {
		if err := checkPlugin(ctx, opts); err != nil {
			return nil, err
		}
	}
	return cli, nil
}

// envIgnoreAmbient makes the engine ignore plugins found on PATH.
const envIgnoreAmbient = "PULUMI_IGNORE_AMBIENT_PLUGINS"

// checkPlugin looks for pulumi-resource-kubernetes at exactly the pinned
// version in the plugin cache, the one place the engine loads it from
// (rack's workspaces ignore binaries on PATH, whose version nobody checks).
// It reads the cache the way `pulumi plugin ls` does (the SDK's own
// reader, which skips half-installed plugins), without a CLI start.
func checkPlugin(_ context.Context, opts Options) error {
	home := opts.PulumiHome
	if home == "" {
		h, err := workspace.GetPulumiHomeDir()
		if err != nil {
			return fmt.Errorf("the pulumi home folder: %w", err)
		}
		home = h
	}
	dir := filepath.Join(home, workspace.PluginDir)
	plugins, err := workspace.GetPluginsFromDir(dir)
	if err != nil {
		return fmt.Errorf("the pulumi plugin cache %s: %w", dir, err)
	}
	var others []string
	for _, p := range plugins {
		if p.Kind != apitype.ResourcePlugin || p.Name != "kubernetes" || p.Version == nil {
			continue
		}
		if p.Version.String() == KubernetesPluginVersion {
			return nil
		}
		others = append(others, "v"+p.Version.String())
	}
	m := missingPlugin(opts)
	if len(others) > 0 {
		m.How = fmt.Sprintf("only %s is installed, and the engine loads exactly v%s, the version rack's SDK asks for: %s",
			strings.Join(others, ", "), KubernetesPluginVersion, m.How)
	}
	if p, err := exec.LookPath("pulumi-resource-kubernetes"); err == nil {
		m.How += fmt.Sprintf(" (the %s on PATH is not used: its version is unknown)", p)
	}
	return m
}

func missingPlugin(opts Options) *MissingError {
	env := ""
	if opts.PulumiHome != "" {
		env = "PULUMI_HOME=" + opts.PulumiHome + " "
	}
	v := KubernetesPluginVersion
	return &MissingError{
		What: "the Pulumi kubernetes provider plugin v" + v,
		How: fmt.Sprintf("run `%[1]spulumi plugin install resource kubernetes v%[2]s`; "+
			"on an airgapped rack, download pulumi-resource-kubernetes-v%[2]s-%[3]s-%[4]s.tar.gz from "+
			"https://github.com/pulumi/pulumi-kubernetes/releases/tag/v%[2]s on a connected machine, "+
			"copy it over and run `%[1]spulumi plugin install resource kubernetes v%[2]s -f FILE`",
			env, v, runtime.GOOS, runtime.GOARCH),
	}
}

// explain turns the engine errors users can fix themselves into what to
// do, and shortens every engine error to what went wrong (the engine's
// full account went to the progress writer already).
func explain(err error, opts Options) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "pulumi-resource-kubernetes"):
		return &explained{advice: missingPlugin(opts), cause: err}
	case strings.Contains(msg, "incorrect passphrase") || strings.Contains(msg, "passphrase must be set"):
		return &explained{cause: err, advice: fmt.Errorf(
			"the stack's secrets were encrypted with another passphrase: unset %s, or set it to the one the stack was created with", EnvPassphrase)}
	case strings.Contains(msg, "the stack is currently locked"):
		return &explained{cause: err, advice: errors.New(
			"another pulumi process holds the stack: wait for it to finish; if none runs any more, run `pulumi cancel` with the same PULUMI_BACKEND_URL")}
	}
	return &explained{cause: err}
}

// explained is an engine error, with advice when rack has some. It reads
// as the advice followed by the cause (the engine's error lines), and
// matches both (errors.As finds a *MissingError in it).
type explained struct{ advice, cause error }

func (e *explained) Error() string {
	cause := engineCause(e.cause)
	if e.advice == nil {
		return cause
	}
	return e.advice.Error() + "\ncause: " + cause
}

func (e *explained) Unwrap() []error {
	if e.advice == nil {
		return []error{e.cause}
	}
	return []error{e.advice, e.cause}
}

// engineCause is an engine error without the progress output the
// Automation API appends to it: its first line and the engine's own
// error lines.
func engineCause(err error) string {
	msg := err.Error()
	head, rest, found := strings.Cut(msg, "\ncode: ")
	if !found {
		return msg
	}
	lines := []string{head}
	seen := map[string]bool{}
	for line := range strings.Lines(rest) {
		l := strings.TrimSpace(line)
		if i := strings.Index(l, "error: "); i >= 0 && !seen[l[i:]] && len(lines) < 12 {
			seen[l[i:]] = true
			lines = append(lines, "  "+l)
		}
	}
	return strings.Join(lines, "\n")
}

// passphrase returns the secrets provider's passphrase: $RACK_PULUMI_PASSPHRASE,
// else the one kept in the state dir, generated on first use (32 random bytes,
// 0600, next to the k3s token).
func passphrase(stateDir string) (string, error) {
	if p := os.Getenv(EnvPassphrase); p != "" {
		return p, nil
	}
	path := filepath.Join(stateDir, PassphraseFile)
	if b, err := os.ReadFile(path); err == nil {
		// Someone may have copied it around with looser permissions.
		if err := os.Chmod(path, 0o600); err != nil {
			return "", err
		}
		if p := strings.TrimSpace(string(b)); p != "" {
			return p, nil
		}
		return "", fmt.Errorf("%s is empty: delete it only if the stack has no state yet, or restore it", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	p := base64.RawURLEncoding.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return passphrase(stateDir) // another rack won the race: use its passphrase
	}
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(p + "\n"); err != nil {
		f.Close()
		return "", err
	}
	return p, f.Close()
}
