package stacks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Removal is what a run would take out of the cluster because the
// inventory no longer has it (an addon, a pool, a volume): rack lists it
// and goes on only with the user's confirmation.
type Removal struct {
	Stack string `json:"stack"`
	// Deleted are deleted from the cluster.
	Deleted []Removed `json:"deleted"`
	// Kept stop being managed by rack but stay in the cluster, with their
	// data: Longhorn and its volumes, local PersistentVolumes, Argo CD's
	// namespace (the apps' Applications).
	Kept []Removed `json:"kept"`
}

// Removed is one resource a Removal names.
type Removed struct {
	Addon string `json:"addon"` // inventory key of its addon (metallb, argocd…), or ""
	Kind  string `json:"kind"`  // Release, IPAddressPool, PersistentVolume…
	Name  string `json:"name"`  // namespace/name or name in the cluster
}

// Empty reports whether the run removes nothing.
func (r Removal) Empty() bool { return len(r.Deleted) == 0 && len(r.Kept) == 0 }

// WriteText lists the removal for a person deciding whether to go on.
func (r Removal) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(r.Deleted) > 0 {
		fmt.Fprintf(tw, "rack up would DELETE from cluster %s (no longer in the inventory):\n", r.Stack)
		for _, d := range r.Deleted {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", orDash(d.Addon), d.Kind, d.Name)
		}
	}
	if len(r.Kept) > 0 {
		fmt.Fprintln(tw, "and stop managing, leaving them in the cluster with their data:")
		for _, k := range r.Kept {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", orDash(k.Addon), k.Kind, k.Name)
		}
	}
	return tw.Flush()
}

// RemovalError is a run refused because it would remove resources and
// nobody confirmed it. Nothing was changed.
type RemovalError struct {
	Removal Removal
	// Cause is the confirmation's refusal, when one was asked.
	Cause error
}

func (e *RemovalError) Error() string {
	const what = "nothing was changed; put them back in the inventory, or run `rack up --yes` to go ahead"
	if e.Cause != nil { // the confirmation showed the list
		return e.Cause.Error() + ": " + what
	}
	var b strings.Builder
	_ = e.Removal.WriteText(&b)
	return b.String() + "not without confirmation: " + what
}

func (e *RemovalError) Unwrap() error { return e.Cause }

// removal compares the resources in the stack's state with those the
// program registers now: what the state has and the program no longer
// does is what the engine would remove.
func (r *run) removal(d *apitype.DeploymentV3) (Removal, error) {
	rm := Removal{Stack: r.stack}
	if len(d.Resources) == 0 {
		return rm, nil
	}
	planned, err := plannedURNs(r.program, Project, r.stack)
	if err != nil {
		return rm, fmt.Errorf("the program of stack %s: %w", r.stack, err)
	}
	types := map[resource.URN]tokens.Type{}
	for _, res := range d.Resources {
		types[res.URN] = res.Type
	}
	for _, res := range d.Resources {
		if !res.Custom || res.Delete || planned[res.URN] || strings.HasPrefix(string(res.Type), "pulumi:providers:") {
			continue
		}
		item := Removed{Addon: addonOf(types[res.Parent]), Kind: kindOf(res.Type), Name: objectName(res)}
		if res.RetainOnDelete {
			rm.Kept = append(rm.Kept, item)
		} else {
			rm.Deleted = append(rm.Deleted, item)
		}
	}
	sortRemoved(rm.Deleted)
	sortRemoved(rm.Kept)
	return rm, nil
}

// exportState reads the stack's state with its secrets left encrypted
// (the workspace's own export decrypts them). A file:// backend's
// checkpoint is read directly, saving a CLI start on every run; any other
// backend, or a layout this reader does not know, goes through
// `pulumi stack export`.
func exportState(ctx context.Context, st auto.Stack, opts Options) (*apitype.DeploymentV3, error) {
	ws := st.Workspace()
	if d, ok, err := readCheckpoint(ws.GetEnvVars()["PULUMI_BACKEND_URL"], Project, st.Name()); ok || err != nil {
		return d, err
	}
	return exportStateCLI(ctx, st, opts)
}

// exportStateCLI is `pulumi stack export`, secrets left encrypted.
func exportStateCLI(ctx context.Context, st auto.Stack, opts Options) (*apitype.DeploymentV3, error) {
	ws := st.Workspace()
	env := os.Environ()
	for k, v := range ws.GetEnvVars() {
		env = append(env, k+"="+v)
	}
	if opts.PulumiHome != "" {
		env = append(env, "PULUMI_HOME="+opts.PulumiHome)
	}
	stdout, stderr, _, err := ws.PulumiCommand().Run(ctx, ws.WorkDir(), nil, nil, nil, env, "stack", "export", "--stack", st.Name())
	if err != nil {
		return nil, fmt.Errorf("pulumi stack export %s: %v: %s", st.Name(), err, strings.TrimSpace(stderr))
	}
	var u apitype.UntypedDeployment
	if err := json.Unmarshal([]byte(stdout), &u); err != nil {
		return nil, fmt.Errorf("pulumi stack export %s: %w", st.Name(), err)
	}
	var d apitype.DeploymentV3
	if len(u.Deployment) > 0 {
		if err := json.Unmarshal(u.Deployment, &d); err != nil {
			return nil, fmt.Errorf("pulumi stack export %s: deployment version %d: %w", st.Name(), u.Version, err)
		}
	}
	return &d, nil
}

// readCheckpoint reads a stack's latest deployment from a file:// backend
// in the project layout (.pulumi/meta.yaml "version: 1",
// .pulumi/stacks/<project>/<stack>.json[.gz]), as `pulumi stack export`
// prints it. ok is false when the backend or its layout is another one.
func readCheckpoint(backend, project, stack string) (d *apitype.DeploymentV3, ok bool, err error) {
	root, ok := fileBackendRoot(backend)
	if !ok {
		return nil, false, nil
	}
	base := stackStatePath(root, project, stack)
	data, err := os.ReadFile(base)
	if errors.Is(err, fs.ErrNotExist) {
		if _, gzErr := os.Stat(base + ".gz"); gzErr == nil {
			return nil, false, nil // gzip-compressed state: the CLI reads it
		}
		return &apitype.DeploymentV3{}, true, nil // a stack not yet updated
	}
	if err != nil {
		return nil, true, fmt.Errorf("stack %s: read its state: %w", stack, err)
	}
	var v apitype.VersionedCheckpoint
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, true, fmt.Errorf("stack %s: its state %s is not valid JSON (%v): restore it from %s", stack, base, err, filepath.Join(root, "backups"))
	}
	if v.Version != 3 {
		return nil, false, nil
	}
	var c apitype.CheckpointV3
	if err := json.Unmarshal(v.Checkpoint, &c); err != nil {
		return nil, true, fmt.Errorf("stack %s: its state %s: %w", stack, base, err)
	}
	if c.Latest == nil {
		return &apitype.DeploymentV3{}, true, nil
	}
	return c.Latest, true, nil
}

// fileBackendRoot is the .pulumi folder of a file:// backend in the project
// layout; ok is false for any other backend or layout.
func fileBackendRoot(backend string) (root string, ok bool) {
	dir, isFile := fileBackendDir(backend)
	if !isFile {
		return "", false
	}
	root = filepath.Join(dir, ".pulumi")
	meta, err := os.ReadFile(filepath.Join(root, "meta.yaml"))
	if err != nil || strings.TrimSpace(string(meta)) != "version: 1" {
		return "", false
	}
	return root, true
}

// stateFile is the path of a stack's state in a file:// backend, "" when
// the backend is another one or holds no such stack.
func stateFile(backend, project, stack string) string {
	root, ok := fileBackendRoot(backend)
	if !ok {
		return ""
	}
	base := stackStatePath(root, project, stack)
	for _, p := range []string{base, base + ".gz"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// stackStatePath is where a file backend's root keeps a stack's state
// (pulumi adds .gz when it compresses it).
func stackStatePath(root, project, stack string) string {
	return filepath.Join(root, "stacks", project, stack+".json")
}

// plannedURNs runs the program against an in-memory engine and returns
// the URN of every resource it registers, as the real engine names them.
func plannedURNs(program pulumi.RunFunc, project, stack string) (map[resource.URN]bool, error) {
	m := &urnRecorder{project: project, stack: stack, urns: map[resource.URN]bool{}}
	// The program asks for no configuration; an update's own config must
	// not leak in from the environment of the engine's language host.
	if err := pulumi.RunErr(program, pulumi.WithMocks(project, stack, m)); err != nil {
		return nil, err
	}
	return m.urns, nil
}

type urnRecorder struct {
	project, stack string
	urns           map[resource.URN]bool
}

func (m *urnRecorder) NewResource(args pulumi.MockResourceArgs) (string, resource.PropertyMap, error) {
	parentType := tokens.Type("")
	if rpc := args.RegisterRPC; rpc != nil {
		if p := resource.URN(rpc.GetParent()); p != "" && p.QualifiedType() != resource.RootStackType {
			parentType = p.QualifiedType()
		}
	}
	urn := resource.NewURN(tokens.QName(m.stack), tokens.PackageName(m.project), parentType, tokens.Type(args.TypeToken), args.Name)
	m.urns[urn] = true
	return args.Name + "-id", args.Inputs, nil
}

func (m *urnRecorder) Call(pulumi.MockCallArgs) (resource.PropertyMap, error) {
	return resource.PropertyMap{}, nil
}

// addonOf names the addon of a component type (rack:addons:ArgoCD → argocd)
// as the inventory spells it.
func addonOf(t tokens.Type) string {
	name, ok := strings.CutPrefix(string(t), "rack:addons:")
	if !ok {
		return ""
	}
	if name == "LocalPV" {
		return "localPV"
	}
	return strings.ToLower(name)
}

// kindOf is the Kubernetes kind of a resource type
// (kubernetes:helm.sh/v3:Release → Release).
func kindOf(t tokens.Type) string {
	s := string(t)
	return s[strings.LastIndex(s, ":")+1:]
}

// objectName is the object's name in the cluster, with its namespace.
func objectName(res apitype.ResourceV3) string {
	name, ns := "", ""
	if meta, ok := res.Outputs["metadata"].(map[string]any); ok {
		name, _ = meta["name"].(string)
		ns, _ = meta["namespace"].(string)
	}
	if name == "" { // a Helm release
		name, _ = res.Outputs["name"].(string)
		ns, _ = res.Outputs["namespace"].(string)
	}
	if name == "" {
		return string(res.URN.Name())
	}
	if ns != "" {
		return ns + "/" + name
	}
	return name
}

func sortRemoved(s []Removed) {
	sort.SliceStable(s, func(i, j int) bool {
		if s[i].Addon != s[j].Addon {
			return s[i].Addon < s[j].Addon
		}
		return s[i].Kind+s[i].Name < s[j].Kind+s[j].Name
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// confirmRemoval asks opts.Confirm, and refuses without it.
func confirmRemoval(rm Removal, opts Options) error {
	if opts.Confirm == nil {
		return &RemovalError{Removal: rm}
	}
	if err := opts.Confirm(rm); err != nil {
		return &RemovalError{Removal: rm, Cause: err}
	}
	return nil
}

// prepare runs before the engine on a platform stack: it lists what the
// run would remove and asks for confirmation, then finishes what an
// interrupted run left pending.
func (r *run) prepare(ctx context.Context, st auto.Stack, opts Options) error {
	d, err := exportState(ctx, st, opts)
	if err != nil {
		return err
	}
	rm, err := r.removal(d)
	if err != nil {
		return err
	}
	cs, dyn, kerr := kubeClients(r.kubeconfig)
	if !rm.Empty() {
		if err := confirmRemoval(rm, opts); err != nil {
			return err
		}
		if kerr != nil {
			return kerr
		}
		for _, res := range d.Resources {
			if res.Type != "kubernetes:argoproj.io/v1alpha1:Application" || !rm.deletes(res) {
				continue
			}
			ns, name, _ := strings.Cut(objectName(res), "/")
			dropped, err := dropCascade(ctx, dyn, ns, name)
			if err != nil {
				return fmt.Errorf("the Argo CD Application %s/%s: remove Argo CD's resources finalizer before deleting it (else its apps' workloads go with it): %w", ns, name, err)
			}
			if dropped {
				fmt.Fprintf(progress(opts), "rack: removed the resources finalizer of Application %s/%s: deleting it leaves its apps running\n", ns, name)
			}
		}
	}
	if len(d.PendingOperations) > 0 && kerr != nil {
		return kerr
	}
	return recoverInterrupted(ctx, st, d, cs, opts)
}

// deletes reports whether the removal deletes res.
func (rm Removal) deletes(res apitype.ResourceV3) bool {
	for _, d := range rm.Deleted {
		if d.Kind == kindOf(res.Type) && d.Name == objectName(res) {
			return true
		}
	}
	return false
}
