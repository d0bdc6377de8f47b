package stacks

// The apps stack, <cluster>-apps: every inventory app's objects, rendered by
// apps.Render from the app and its release state, and the release states
// themselves. A stack of its own, beside the platform's, so that a promote
// or a rollback touches only the apps and never waits on a Helm release.
//
// Where the release state lives, and why: in the apps stack's outputs
// (OutputReleases: app name → release.State), in the stack's checkpoint in
// the state backend, the same file:// backend (or --backend) as the objects
// it describes. Not in stack config: config is written before an update
// runs and lives in the local workspace folder, so a failed run would keep
// a state that was never applied, and another machine with the same backend
// would not see it. Each app's output is derived from the IDs of all of that
// app's objects, which resolve only once the provider has applied them
// (Deployments Available, Services with endpoints): the engine records the
// new state only after every object is in place. A run that fails or is
// killed before then leaves the outputs of the last complete run, and the
// next rack up (Deploy from those states) applies the same objects again.
// The old objects a step removes (the previous colour's Deployment) are
// deleted after the outputs are recorded: that is still the state's truth,
// as clients no longer reach them.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes"
	corev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/core/v1"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optup"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/homelab/rack/addons/traefik"
	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/inventory"
)

// The apps stack.
const (
	// AppsStackSuffix follows the cluster's name in the apps stack's name.
	AppsStackSuffix = "-apps"
	// OutputReleases is the apps stack output holding every app's
	// release.State, by app name.
	OutputReleases = "releases"
	// OutputTraefikAddress is the platform stack output with Traefik's
	// LoadBalancer address (empty without MetalLB).
	OutputTraefikAddress = "traefikAddress"
	// TypeApp is the component type of one app.
	TypeApp = "rack:apps:App"
	// DefaultReadyTimeout bounds the wait for an app's Deployments to be
	// Available (and its Services' endpoints ready) before its traffic
	// objects move; past it the run fails and clients stay where they were.
	DefaultReadyTimeout = 10 * time.Minute

	// DefaultServedTimeout bounds the wait, after a run, for clients to see
	// what it delivered (release.Gate.Served): old pods gone after their
	// preStop pause, Traefik serving the new routes.
	DefaultServedTimeout = time.Minute
)

// AppsOptions configure the apps stack's runs.
type AppsOptions struct {
	Options
	// ReadyTimeout: see DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// ServedTimeout: see DefaultServedTimeout.
	ServedTimeout time.Duration
	// Notes receives what a run could not confirm clients see (nil
	// discards it): the objects are applied and the states recorded
	// either way.
	Notes io.Writer
}

// AppsStack names the apps stack of the inventory's cluster.
func AppsStack(inv *inventory.Inventory) string { return inv.Cluster.Name + AppsStackSuffix }

// DeliversApps reports whether the apps stack delivers the app objects
// (false: Argo CD does, from rack render's output).
func DeliversApps(inv *inventory.Inventory) bool {
	return inv.Addons.ArgoCD == nil || !inv.Addons.ArgoCD.DeliverApps
}

// AppsResult is what UpApps did.
type AppsResult struct {
	Result
	// States are the release states now recorded.
	States map[string]release.State
}

// UpApps is rack up's apps phase: read the saved release states, apply
// apps.Deploy for the inventory's images (a changed image becomes a
// candidate, or replaces the version for recreate and rolling), deliver and
// record them.
func UpApps(ctx context.Context, inv *inventory.Inventory, opts AppsOptions) (AppsResult, error) {
	saved, err := Releases(ctx, inv, opts)
	if err != nil {
		return AppsResult{}, err
	}
	states, err := release.Deploy(inv, saved)
	if err != nil {
		return AppsResult{}, err
	}
	res, err := ApplyReleases(ctx, inv, states, opts)
	return AppsResult{Result: res, States: states}, err
}

// Releases reads every app's saved release state from the apps stack's
// outputs; empty before the first run.
func Releases(ctx context.Context, inv *inventory.Inventory, opts AppsOptions) (map[string]release.State, error) {
	_, states, err := openApps(ctx, inv, opts, false)
	return states, err
}

// openApps opens the apps stack and reads the saved states; with
// kubernetes, it checks first that the kubernetes plugin is there too.
func openApps(ctx context.Context, inv *inventory.Inventory, opts AppsOptions, kubernetes bool) (auto.Stack, map[string]release.State, error) {
	if inv == nil || inv.Cluster.Name == "" {
		return auto.Stack{}, nil, errors.New("stacks: the inventory names no cluster")
	}
	r := &run{stateDir: inv.StateDir(), stack: AppsStack(inv), needsKubernetes: kubernetes}
	st, err := r.open(ctx, opts.Options)
	if err != nil {
		return auto.Stack{}, nil, err
	}
	outs, err := st.Outputs(ctx)
	if err != nil {
		return auto.Stack{}, nil, explain(fmt.Errorf("read the outputs of stack %s: %w", r.stack, err), opts.Options)
	}
	states, err := release.Decode(outs[OutputReleases].Value)
	return st, states, err
}

// ApplyReleases delivers every inventory app that has a state in states
// (unless Argo CD delivers them) and records the states as the stack's
// outputs, only once delivered. It returns once clients see what it
// delivered (see served), so that the next request after rack up or
// rack app promote reaches the new routes and versions only.
func ApplyReleases(ctx context.Context, inv *inventory.Inventory, states map[string]release.State, opts AppsOptions) (Result, error) {
	r, err := appsRun(inv, states, opts)
	if err != nil {
		return Result{}, err
	}
	res, err := r.up(ctx, opts.Options)
	if err != nil {
		return res, summarise(err)
	}
	if DeliversApps(inv) {
		served(ctx, inv, states, opts)
	}
	return res, nil
}

// served waits, up to opts.ServedTimeout for all apps together, until
// clients see every delivered app as its state says (release.Gate.Served:
// the old pods gone, Traefik serving the new routes). What is not seen in
// time is a note, not a failure: the objects are applied and the states
// recorded, clients only see them late.
func served(ctx context.Context, inv *inventory.Inventory, states map[string]release.State, opts AppsOptions) {
	notes := notesOf(opts)
	timeout := opts.ServedTimeout
	if timeout <= 0 {
		timeout = DefaultServedTimeout
	}
	kubeconfig, err := readKubeconfig(inv, opts.Options)
	if err != nil {
		fmt.Fprintf(notes, "note: cannot confirm that clients see the apps as delivered: %v\n", err)
		return
	}
	cs, _, err := kubeClients(kubeconfig)
	if err != nil {
		fmt.Fprintf(notes, "note: cannot confirm that clients see the apps as delivered: %v\n", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	gate := &release.Gate{Client: cs}
	for _, app := range inv.Apps {
		st, ok := states[app.Name]
		if !ok {
			continue
		}
		if err := gate.Served(ctx, app, st); err != nil {
			fmt.Fprintf(notes, "note: %s is delivered, but clients may not see all of it yet: %v\n", app.Name, err)
		}
	}
}

// notesOf is where a run's notes go (opts.Notes, or nowhere).
func notesOf(opts AppsOptions) io.Writer {
	if opts.Notes == nil {
		return io.Discard
	}
	return opts.Notes
}

// PreviewApps shows what delivering states would change.
func PreviewApps(ctx context.Context, inv *inventory.Inventory, states map[string]release.State, opts AppsOptions) (Result, error) {
	r, err := appsRun(inv, states, opts)
	if err != nil {
		return Result{}, err
	}
	return r.preview(ctx, opts.Options)
}

// AppsStore is the apps stack as a release.Store. Every start of the
// Pulumi CLI costs the best part of a second on a small machine, and a
// promote's flip should not wait for them: Load reads the states from a
// file backend's checkpoint without the CLI (another backend: it opens the
// stack, and Apply updates the stack Load opened), and Apply moves the
// traffic before the update when the step allows it.
type AppsStore struct {
	Inventory *inventory.Inventory
	Options   AppsOptions
	// Delivers makes Load check too, before anything else, that Pulumi can
	// deliver (the kubernetes plugin, when the stack delivers the apps): a
	// promote then fails in seconds, before any gate, rather than after.
	Delivers bool

	// opened is the stack Load opened, checked for delivery or not.
	opened        *auto.Stack
	openedChecked bool
	// saved are the states Load read: what the cluster runs now.
	saved map[string]release.State
}

// Load reads the saved states: from the file backend's checkpoint when it
// can (no CLI start; the stack is opened when Apply needs it), else
// through the stack's outputs.
func (s *AppsStore) Load(ctx context.Context) (map[string]release.State, error) {
	needsPlugin := s.Delivers && DeliversApps(s.Inventory)
	if states, ok, err := savedStates(s.Inventory, s.Options.Options); ok || err != nil {
		if err != nil {
			return nil, err
		}
		if needsPlugin {
			if _, err := check(ctx, s.Options.Options, true); err != nil {
				return nil, err
			}
		}
		s.opened, s.saved = nil, maps.Clone(states)
		return states, nil
	}
	st, states, err := openApps(ctx, s.Inventory, s.Options, needsPlugin)
	if err != nil {
		return nil, err
	}
	s.opened, s.openedChecked = &st, needsPlugin
	s.saved = maps.Clone(states) // the Runner changes states in place
	return states, nil
}

// Apply delivers and records states, moving traffic first when the step
// allows it (flip).
func (s *AppsStore) Apply(ctx context.Context, states map[string]release.State) error {
	w := progress(s.Options.Options)
	if DeliversApps(s.Inventory) && s.saved != nil {
		s.flip(ctx, states, w)
	}
	if s.opened == nil || s.openedChecked != DeliversApps(s.Inventory) {
		// Not opened, or opened without checking what delivery needs.
		_, err := ApplyReleases(ctx, s.Inventory, states, s.Options)
		return err
	}
	r, err := appsRun(s.Inventory, states, s.Options)
	if err != nil {
		return err
	}
	s.opened.Workspace().SetProgram(r.program)
	// Refresh first, as every run of rack's stacks does: what was changed
	// or deleted by hand is seen and put back.
	if _, err := s.opened.Up(ctx, optup.Refresh(), optup.ProgressStreams(w), optup.ErrorProgressStreams(w)); err != nil {
		return summarise(explain(fmt.Errorf("pulumi up of stack %s: %w", r.stack, err), s.Options.Options))
	}
	if DeliversApps(s.Inventory) {
		served(ctx, s.Inventory, states, s.Options)
	}
	return nil
}

// savedStates reads the release states from the apps stack's checkpoint in
// a file backend, as its outputs hold them; ok is false when only the CLI
// can read them (another backend, or the states kept as a secret).
func savedStates(inv *inventory.Inventory, opts Options) (map[string]release.State, bool, error) {
	if inv == nil || inv.Cluster.Name == "" {
		return nil, false, nil
	}
	backend, err := backendURL(inv.StateDir(), opts)
	if err != nil {
		return nil, false, nil
	}
	d, ok, err := readCheckpoint(backend, Project, AppsStack(inv))
	if !ok || err != nil {
		return nil, ok, err
	}
	for _, res := range d.Resources {
		if res.Type != resource.RootStackType || res.Delete {
			continue
		}
		v, found := res.Outputs[OutputReleases]
		if m, isMap := v.(map[string]any); isMap && m[resource.SigKey] != nil {
			return nil, false, nil // a secret: the CLI decrypts it
		}
		if !found {
			v = nil
		}
		states, err := release.Decode(v)
		return states, true, err
	}
	return map[string]release.State{}, true, nil // never updated
}

// flip moves traffic ahead of the Pulumi update (flipRoutes) when the
// step allows it; what it cannot do the update does.
func (s *AppsStore) flip(ctx context.Context, states map[string]release.State, w io.Writer) {
	kubeconfig, err := readKubeconfig(s.Inventory, s.Options.Options)
	if err != nil {
		return
	}
	cs, dyn, err := kubeClients(kubeconfig)
	if err != nil {
		return
	}
	for _, app := range flipRoutes(ctx, &release.Gate{Client: cs}, dyn, s.Inventory, s.saved, states, notesOf(s.Options)) {
		fmt.Fprintf(w, "rack: %s: traffic moved ahead of the Pulumi update, which records it\n", app)
	}
}

// appsRun binds the apps program to the cluster, like platformRun: an
// explicit provider whose kubeconfig is a secret. Without delivery (Argo CD
// delivers) the program registers no Kubernetes object and needs neither.
func appsRun(inv *inventory.Inventory, states map[string]release.State, opts AppsOptions) (*run, error) {
	if inv == nil || inv.Cluster.Name == "" {
		return nil, errors.New("stacks: the inventory names no cluster")
	}
	deliver := DeliversApps(inv)
	r := &run{stateDir: inv.StateDir(), stack: AppsStack(inv), needsKubernetes: deliver}
	var kubeconfig []byte
	if deliver {
		var err error
		if kubeconfig, err = readKubeconfig(inv, opts.Options); err != nil {
			return nil, err
		}
	}
	timeout := opts.ReadyTimeout
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	r.program = func(ctx *pulumi.Context) error {
		var ropts []pulumi.ResourceOption
		if deliver {
			k8s, err := kubernetes.NewProvider(ctx, "rack-apps", &kubernetes.ProviderArgs{
				Kubeconfig: pulumi.ToSecret(pulumi.String(string(kubeconfig))).(pulumi.StringOutput),
			})
			if err != nil {
				return err
			}
			ropts = append(ropts, pulumi.Providers(k8s))
		}
		_, err := deployApps(ctx, inv, states, appsProgram{deliver: deliver, readyTimeout: timeout}, ropts...)
		return err
	}
	return r, nil
}

func readKubeconfig(inv *inventory.Inventory, opts Options) ([]byte, error) {
	path := opts.Kubeconfig
	if path == "" {
		path = filepath.Join(inv.StateDir(), KubeconfigFile)
	}
	kubeconfig, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no kubeconfig at %s: the node phase of `rack up` fetches it from the first server; run it first", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read kubeconfig: %w", err)
	}
	return kubeconfig, nil
}

// appsProgram are the program's settings.
type appsProgram struct {
	deliver      bool
	readyTimeout time.Duration
}

// AppsDeployment is what deployApps registered.
type AppsDeployment struct {
	Namespace *corev1.Namespace
	Apps      map[string]*App
	Releases  pulumi.Map
}

// deployApps registers the apps' namespace, one App component per
// inventory app that has a state, and the releases output.
func deployApps(ctx *pulumi.Context, inv *inventory.Inventory, states map[string]release.State, p appsProgram, opts ...pulumi.ResourceOption) (*AppsDeployment, error) {
	out := &AppsDeployment{Apps: map[string]*App{}, Releases: pulumi.Map{}}
	var aopts []pulumi.ResourceOption
	if p.deliver && len(states) > 0 {
		// Retained: deleting a namespace deletes the volumes in it, and no
		// app leaving the inventory may take a database with it.
		ns, err := corev1.NewNamespace(ctx, apps.DefaultNamespace, &corev1.NamespaceArgs{
			Metadata: &metav1.ObjectMetaArgs{
				Name:   pulumi.String(apps.DefaultNamespace),
				Labels: pulumi.StringMap{apps.LabelManagedBy: pulumi.String(apps.ManagedBy)},
			},
		}, append(opts, pulumi.RetainOnDelete(true))...)
		if err != nil {
			return nil, err
		}
		out.Namespace = ns
		aopts = append(aopts, pulumi.DependsOn([]pulumi.Resource{ns}))
	}
	for i, app := range inv.Apps {
		st, ok := states[app.Name]
		if !ok {
			continue
		}
		if !p.deliver {
			out.Releases[app.Name] = pulumi.ToMap(release.Encode(st))
			continue
		}
		a, err := NewApp(ctx, app.Name, &AppArgs{App: app, State: st, SecretEnv: inv.EnvFromEnvironment(i), ReadyTimeout: p.readyTimeout},
			append(append([]pulumi.ResourceOption{}, opts...), aopts...)...)
		if err != nil {
			return nil, err
		}
		out.Apps[app.Name] = a
		out.Releases[app.Name] = a.State
	}
	ctx.Export(OutputReleases, out.Releases)
	return out, nil
}

// AppArgs configure one App.
type AppArgs struct {
	App   inventory.App
	State release.State
	// SecretEnv are the env keys whose values are secrets (from ${VAR}).
	SecretEnv []string
	// ReadyTimeout bounds each object's wait to be ready.
	ReadyTimeout time.Duration
}

// App is one inventory app's objects, as apps.Render makes them.
type App struct {
	pulumi.ResourceState

	// Objects are the registered objects by apps.Key (Kind/name).
	Objects map[string]*KubeObject
	// State is the app's release.State, known once every object is applied.
	State pulumi.MapOutput
}

// KubeObject is one Kubernetes object of an app.
type KubeObject struct {
	pulumi.CustomResourceState
}

// NewApp registers the objects of args.App in args.State, each depending
// on apps.DependsOn: Traefik's objects on exactly what they send requests
// to (so they move only once those Deployments are Available, and as soon
// as they are), every other object on the waves before its own.
// PersistentVolumeClaims are retained when the app or its storage leaves
// the inventory. The Secret of the secret env holds Pulumi secrets.
//
// No object is ever replaced: names are stable across every step (Render
// keeps them so) and no object asks for deleteBeforeReplace, so a route is
// always updated in place, never deleted and created again.
func NewApp(ctx *pulumi.Context, name string, args *AppArgs, opts ...pulumi.ResourceOption) (*App, error) {
	if args == nil {
		return nil, errors.New("apps: args are required")
	}
	objs, err := apps.Render(args.App, args.State.Release, apps.Options{SecretEnv: args.SecretEnv})
	if err != nil {
		return nil, err
	}
	a := &App{Objects: map[string]*KubeObject{}}
	if err := ctx.RegisterComponentResource(TypeApp, name, a, opts...); err != nil {
		return nil, err
	}
	// Render returns the objects sorted by wave, so what an object
	// depends on is registered before it.
	var all []any
	for _, o := range objs {
		var deps []pulumi.Resource
		for _, d := range apps.DependsOn(o, objs) {
			r, ok := a.Objects[apps.Key(d)]
			if !ok {
				return nil, fmt.Errorf("app %s: %s depends on %s, which is not registered before it", args.App.Name, apps.Key(o), apps.Key(d))
			}
			deps = append(deps, r)
		}
		ropts := []pulumi.ResourceOption{pulumi.Parent(a), pulumi.DependsOn(deps)}
		if args.ReadyTimeout > 0 {
			t := args.ReadyTimeout.String()
			ropts = append(ropts, pulumi.Timeouts(&pulumi.CustomTimeouts{Create: t, Update: t}))
		}
		if o.GetKind() == "PersistentVolumeClaim" {
			ropts = append(ropts, pulumi.RetainOnDelete(true))
		}
		var secret map[string]string
		if apps.IsSecret(o) {
			secret = map[string]string{}
			for _, k := range args.SecretEnv {
				secret[k] = args.App.Env[k]
			}
		}
		r, err := registerObject(ctx, o, secret, ropts...)
		if err != nil {
			return nil, fmt.Errorf("app %s: %s: %w", args.App.Name, apps.Key(o), err)
		}
		a.Objects[apps.Key(o)] = r
		all = append(all, r.ID())
	}
	encoded := release.Encode(args.State)
	a.State = pulumi.All(all...).ApplyT(func([]any) map[string]any { return encoded }).(pulumi.MapOutput)
	if err := ctx.RegisterResourceOutputs(a, pulumi.Map{"release": a.State}); err != nil {
		return nil, err
	}
	return a, nil
}

// registerObject registers obj as the kubernetes provider's resource of its
// kind, with obj itself as the inputs (the same object rack render writes).
// secret, when set, replaces stringData with Pulumi secrets.
func registerObject(ctx *pulumi.Context, obj *unstructured.Unstructured, secret map[string]string, opts ...pulumi.ResourceOption) (*KubeObject, error) {
	props := kubernetes.UntypedArgs{}
	for k, v := range obj.Object {
		props[k] = v
	}
	if secret != nil {
		props["stringData"] = pulumi.ToSecret(pulumi.ToStringMap(secret))
	}
	var r KubeObject
	if err := ctx.RegisterResource(TypeToken(obj), obj.GetName(), props, &r, opts...); err != nil {
		return nil, err
	}
	return &r, nil
}

// TypeToken is the kubernetes provider's type of obj, as its typed SDK
// resources have it: kubernetes:core/v1:Service, kubernetes:apps/v1:Deployment,
// kubernetes:traefik.io/v1alpha1:IngressRoute.
func TypeToken(obj *unstructured.Unstructured) string {
	gv := obj.GetAPIVersion()
	if !strings.Contains(gv, "/") {
		gv = "core/" + gv
	}
	return "kubernetes:" + gv + ":" + obj.GetKind()
}

// traefikAddon installs Traefik when the inventory asks for it: a
// LoadBalancer Service with a fixed address from MetalLB's first pool (the
// one below Argo CD's), ready once MetalLB serves. One call from deploy.
func traefikAddon(ctx *pulumi.Context, inv *inventory.Inventory, p *platform, opts ...pulumi.ResourceOption) error {
	t := inv.Addons.Traefik
	if t == nil {
		return nil
	}
	args := &traefik.TraefikArgs{Chart: ChartSource(inv, "addons.traefik")}
	topts := append([]pulumi.ResourceOption{}, opts...)
	if p.MetalLB != nil {
		args.LoadBalancerIP = traefikAddress(inv.Addons.MetalLB.Pools)
		topts = append(topts, pulumi.DependsOn(p.MetalLB.Serving))
	}
	c, err := traefik.NewTraefik(ctx, "traefik", args, topts...)
	if err != nil {
		return err
	}
	ctx.Export(OutputTraefikAddress, c.Address)
	return nil
}

// traefikAddress is the address below Argo CD's (the last of the first
// pool, whether Argo CD is installed or not, so adding it later moves
// nothing): fixed, so DNS names of the apps' hosts can point at it. Empty
// when the pool has no second address (MetalLB picks one then).
func traefikAddress(pools []inventory.IPPool) string {
	top := argoCDAddress(pools)
	if top == "" {
		return ""
	}
	r, err := inventory.ParseRange(pools[0].Addresses[len(pools[0].Addresses)-1])
	if err != nil {
		return ""
	}
	a, err := netip.ParseAddr(top)
	if err != nil {
		return ""
	}
	for {
		a = a.Prev()
		if !a.IsValid() || a.Compare(r.First) < 0 {
			return ""
		}
		// x.x.x.255 and x.x.x.0 trip up some clients, as for Argo CD's.
		if a.Is4() && (a.As4()[3] == 255 || a.As4()[3] == 0) {
			continue
		}
		return a.String()
	}
}

// diagnostic is the header of one resource's diagnostics in the engine's
// output: "  kubernetes:apps/v1:Deployment (web-green):".
var diagnostic = regexp.MustCompile(`^\s+kubernetes:[^ ]+:([A-Za-z]+) \(([^)]+)\):$`)

// AppsFailure is a failed run of the apps stack, summed up: which objects
// failed and why, and what that means for clients.
type AppsFailure struct {
	// Objects are "Kind name: first error line" of each failed object.
	Objects []string
	cause   error
}

func (e *AppsFailure) Error() string {
	return fmt.Sprintf("what failed: %s. Traffic objects move only once what they route to is ready, so clients still reach what they reached before, "+
		"and the release states were not recorded: fix what failed (kubectl -n %s describe …) and run rack up again, "+
		"or withdraw a candidate with rack app rollback APP", strings.Join(e.Objects, "; "), apps.DefaultNamespace)
}

func (e *AppsFailure) Unwrap() error { return e.cause }

// summarise turns the engine's failure into the objects that failed; an
// error it cannot read is returned as it is.
func summarise(err error) error {
	var out []string
	lines := strings.Split(fullText(err), "\n")
	for i, l := range lines {
		m := diagnostic.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		var why []string
		for _, next := range lines[i+1:] {
			next = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(next), "*"))
			next = strings.TrimSpace(strings.TrimPrefix(next, "error:"))
			if next == "" || diagnostic.MatchString(next) || strings.HasSuffix(next, "errors occurred:") {
				if next == "" && len(why) > 0 {
					break
				}
				continue
			}
			if _, after, ok := strings.Cut(next, "failed to fully initialize or become live: "); ok {
				next = after
			}
			why = append(why, next)
			if len(why) == 2 {
				break
			}
		}
		for j := range why {
			why[j] = strings.TrimRight(why[j], ".")
		}
		out = append(out, fmt.Sprintf("%s %s: %s", m[1], m[2], strings.Join(why, ", ")))
	}
	if len(out) == 0 {
		return err
	}
	return &AppsFailure{Objects: out, cause: err}
}

// fullText is the longest message in err's tree: the engine's whole
// account, which the runner's error shortens to its first lines.
func fullText(err error) string {
	best := err.Error()
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if m := e.Error(); len(m) > len(best) {
			best = m
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return best
}
