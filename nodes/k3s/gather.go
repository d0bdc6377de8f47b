package k3s

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/kube"
)

// BuildPlan gathers facts from every node in parallel (and, when the cluster
// answers, its Nodes) and plans each node. It changes nothing, on the nodes
// or here. A node that cannot be reached gets an "unreachable" plan.
func BuildPlan(ctx context.Context, inv *inventory.Inventory, o Options) (*Plan, error) {
	version := inv.Cluster.K3s.Version
	if _, err := inventory.ParseK3sVersion(version); err != nil {
		return nil, fmt.Errorf("%s: cluster.k3s.version %q is not an exact k3s release: the rack commands resolve a minor through the version catalog (rack versions lists them); or write one such as %s.5+k3s1", inv.Where("cluster.k3s.version"), version, version)
	}
	token, err := ResolveToken(inv)
	if err != nil {
		return nil, err
	}
	x := &run{inv: inv, opts: o}
	plan := &Plan{Cluster: inv.Cluster.Name, Version: version, Local: []nodes.Step{}, x: x, token: token, targets: map[string]nodes.Target{}}
	if token.Fresh {
		plan.Local = append(plan.Local, nodes.Step{Name: "generate the cluster token and keep it in " + token.Path + " (0600)",
			Why: "the inventory sets no cluster.k3s.token; back the file up: a rebuilt server needs it"})
	}
	selected := selectNodes(inv, o.Only)
	var targets []nodes.Target
	for _, n := range selected {
		t, err := o.Resolver.Resolve(n)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		plan.targets[n.Name] = t
		targets = append(targets, t)
	}
	registered := registeredNodes(ctx, inv)

	observed, results := eachNode(ctx, targets, o.FanOut, func(ctx context.Context, h *nodes.Host) (Observed, error) {
		n, _ := inv.Node(h.Target.Name)
		obs, err := observe(ctx, h, n, localDirs(inv, n))
		obs.Node = registered[n.Name]
		return obs, err
	})
	errs := failures(results)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	arts := &artifacts{bins: o.Binaries, version: version}
	for _, n := range selected {
		if err := errs[n.Name]; err != nil {
			plan.Nodes = append(plan.Nodes, NodePlan{Node: n.Name, Role: Role(n), Arch: n.Arch, Action: ActionUnreachable, To: version,
				Reasons: []string{err.Error()}, Steps: []nodes.Step{}})
			continue
		}
		obs := observed[n.Name]
		if token.Fresh {
			if t := configToken(obs.Facts.K3sConfig); t != "" {
				return nil, fmt.Errorf("node %s already runs k3s with a cluster token, but %s is missing and the inventory sets none: restore the file from your backup (or set cluster.k3s.token); a new token would lock every node out",
					n.Name, token.Path)
			}
		}
		d, err := desiredFor(ctx, inv, n, obs.Facts, token.Value, arts)
		if err != nil {
			plan.Nodes = append(plan.Nodes, NodePlan{Node: n.Name, Role: Role(n), Arch: obs.Facts.Arch, Action: ActionRefused, To: version,
				Reasons: []string{err.Error()}, Steps: []nodes.Step{}})
			continue
		}
		plan.Nodes = append(plan.Nodes, PlanNode(d, obs, x))
	}
	return plan, nil
}

// registeredNodes reads the cluster's Nodes through rack's own kubeconfig,
// when there is one and the API answers within seconds; otherwise nothing
// (a new cluster, or a first server that is down), and the plan assumes the
// nodes still register.
func registeredNodes(ctx context.Context, inv *inventory.Inventory) map[string]*corev1.Node {
	out := map[string]*corev1.Node{}
	kc, err := kube.LoadContext(inv.State().Kubeconfig(), inv.Cluster.Name)
	if err != nil {
		return out
	}
	rc, err := kc.RESTConfig()
	if err != nil {
		return out
	}
	rc.Timeout = 5 * time.Second
	cs, err := kube.NewClient(rc)
	if err != nil {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return out
	}
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out
}

// selectNodes is every node, or the named ones plus the first server (which
// they join and whose kubeconfig rack reads).
func selectNodes(inv *inventory.Inventory, only []string) []inventory.Node {
	if len(only) == 0 {
		return inv.Nodes
	}
	want := map[string]bool{}
	for _, n := range only {
		want[n] = true
	}
	if s := inv.Servers(); len(s) > 0 {
		want[s[0].Name] = true
	}
	var out []inventory.Node
	for _, n := range inv.Nodes {
		if want[n.Name] {
			out = append(out, n)
		}
	}
	return out
}

// observe gathers a node's facts and probes its k3s service (and dirs, the
// local volume folders to check): what every plan of a node starts from.
func observe(ctx context.Context, h *nodes.Host, n inventory.Node, dirs []string) (Observed, error) {
	h.Step("gathering facts")
	f, err := h.Gather(ctx)
	if err != nil {
		return Observed{}, err
	}
	h.Step("probing service")
	out, err := h.Output(ctx, probeCmd(ServiceName(n), envPathFor(n, f.Init), dirs), nodes.RunOptions{Privileged: true, Quiet: true})
	if err != nil {
		return Observed{}, err
	}
	obs := parseProbe(out, dirs)
	obs.Facts = f
	return obs, nil
}

// eachNode runs f on every target at once, a failed node stopping no
// other, and returns what each node gave with every node's result.
func eachNode[T any](ctx context.Context, targets []nodes.Target, fo nodes.FanOutOptions, f func(context.Context, *nodes.Host) (T, error)) (map[string]T, []nodes.Result) {
	var mu sync.Mutex
	out := map[string]T{}
	fo.Serial, fo.StopOnError = false, false
	res := nodes.FanOut(ctx, targets, fo, func(ctx context.Context, h *nodes.Host) error {
		v, err := f(ctx, h)
		if err != nil {
			return err
		}
		mu.Lock()
		out[h.Target.Name] = v
		mu.Unlock()
		return nil
	})
	return out, res
}

// failures maps each failed node to its error.
func failures(res []nodes.Result) map[string]error {
	errs := map[string]error{}
	for _, r := range res {
		if r.Err != nil {
			errs[r.Node] = r.Err
		}
	}
	return errs
}

// probeCmd reports, in one round trip, what the facts do not: whether the
// service runs, its env file's checksum, storage tools and local volume
// folders. Folders are reported by their index, never echoed.
func probeCmd(service, envPath string, dirs []string) nodes.Cmd {
	var cmds []string
	for _, p := range []nodes.Package{nodes.OpenISCSI, nodes.NFSClient} {
		cmds = append(cmds, p.Command)
	}
	args := append([]string{service, envPath, strings.Join(cmds, " ")}, dirs...)
	return nodes.Sh(`service=$1 env=$2 cmds=$3; shift 3
if [ -d /run/systemd/system ]; then systemctl is-active --quiet "$service" && echo active=1
elif command -v rc-service >/dev/null 2>&1; then rc-service "$service" status >/dev/null 2>&1 && echo active=1; fi
[ -f "$env" ] && echo env=$(sha256sum < "$env" | cut -d' ' -f1)
PATH=$PATH:/sbin:/usr/sbin
for c in $cmds; do command -v "$c" >/dev/null 2>&1 && echo cmd=$c; done
i=0
for d in "$@"; do [ -d "$d" ] && echo dir=$i; i=$((i+1)); done
true`, args...)
}

func parseProbe(out []byte, dirs []string) Observed {
	o := Observed{HaveCommands: map[string]bool{}, HaveDirs: map[string]bool{}}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "active":
			o.Active = true
		case "env":
			o.EnvSHA256 = v
		case "cmd":
			o.HaveCommands[v] = true
		case "dir":
			if i, err := strconv.Atoi(v); err == nil && i >= 0 && i < len(dirs) {
				o.HaveDirs[dirs[i]] = true
			}
		}
	}
	return o
}

func envPathFor(n inventory.Node, init string) string {
	u, err := ServiceUnit(n, init)
	if err != nil {
		return "/nonexistent"
	}
	return u.EnvPath
}

func localDirs(inv *inventory.Inventory, n inventory.Node) []string {
	var out []string
	for _, v := range inv.LocalVolumes() {
		if v.Node == n.Name {
			out = append(out, v.Path)
		}
	}
	if n.OffersLonghorn() {
		out = append(out, n.Storage.Longhorn)
	}
	return out
}

// storagePackages lists what a node's storage role needs installed.
func storagePackages(n inventory.Node) []nodes.Package {
	if !n.OffersLonghorn() {
		return nil
	}
	return []nodes.Package{nodes.OpenISCSI, nodes.NFSClient}
}

// artifacts resolves the binary's checksum and the images once per arch:
// hashing a 60 MB binary is what 16 nodes must not do 16 times.
type artifacts struct {
	bins    Binaries
	version string
	byArch  map[string]resolved
}

type resolved struct {
	sum    string
	images []string
	err    error
}

func (a *artifacts) get(ctx context.Context, arch string) (string, []string, error) {
	if r, ok := a.byArch[arch]; ok {
		return r.sum, r.images, r.err
	}
	var r resolved
	r.sum, _, r.err = a.bins.Checksum(ctx, a.version, arch)
	if r.err == nil {
		r.images, r.err = a.bins.AirgapImages(arch)
	}
	if a.byArch == nil {
		a.byArch = map[string]resolved{}
	}
	a.byArch[arch] = r
	return r.sum, r.images, r.err
}

func desiredFor(ctx context.Context, inv *inventory.Inventory, n inventory.Node, f nodes.Facts, token string, arts *artifacts) (Desired, error) {
	arch := f.Arch
	if !f.ArchKnown {
		return Desired{}, fmt.Errorf("unsupported machine %q (uname -m): k3s runs on arm64, amd64 and arm", f.Machine)
	}
	if n.Arch != "" && n.Arch != arch {
		return Desired{}, fmt.Errorf("%s: the inventory says arch %s but the machine is %s (uname -m: %s): fix the arch or the address", inv.Where(nodePath(inv, n)+".arch"), n.Arch, arch, f.Machine)
	}
	unit, err := ServiceUnit(n, f.Init)
	if err != nil {
		return Desired{}, err
	}
	sum, images, err := arts.get(ctx, arch)
	if err != nil {
		return Desired{}, err
	}
	cfg, err := Config(inv, n, token)
	if err != nil {
		return Desired{}, err
	}
	return Desired{Node: n, Version: inv.Cluster.K3s.Version, Arch: arch, BinarySHA256: sum, Images: images, Config: cfg, Unit: unit,
		Packages: storagePackages(n), Dirs: localDirs(inv, n), FirstServer: isFirstServer(inv, n),
		EtcdMember: n.IsServer() && embeddedEtcd(inv)}, nil
}

func nodePath(inv *inventory.Inventory, n inventory.Node) string {
	for i, x := range inv.Nodes {
		if x.Name == n.Name {
			return fmt.Sprintf("nodes[%d]", i)
		}
	}
	return "nodes"
}
