package k3s

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
)

// Options for planning and applying. Everything is passed in; nothing is global.
type Options struct {
	Binaries Binaries
	// Resolver turns inventory nodes into SSH targets (~/.ssh/config etc.).
	Resolver nodes.Resolver
	// FanOut carries the concurrency limit, progress display and SSH options.
	FanOut nodes.FanOutOptions
	// ReadyTimeout bounds the wait for each Node to be Ready (default 5m).
	ReadyTimeout time.Duration
	// RebootTimeout bounds a Raspberry Pi's reboot (default 5m).
	RebootTimeout time.Duration
	// Kubeconfig is the file the cluster's context is merged into; "" skips it.
	Kubeconfig string
	// Only restricts the work to these nodes (and the first server they need).
	Only []string
}

func (o Options) readyTimeout() time.Duration {
	if o.ReadyTimeout > 0 {
		return o.ReadyTimeout
	}
	return 5 * time.Minute
}

func (o Options) rebootTimeout() time.Duration {
	if o.RebootTimeout > 0 {
		return o.RebootTimeout
	}
	return 5 * time.Minute
}

// Plan is what `rack up --nodes-only` would do to every node. It is data:
// `rack plan` prints it, Apply carries it out.
type Plan struct {
	Cluster string     `json:"cluster"`
	Version string     `json:"version"`
	Nodes   []NodePlan `json:"nodes"`

	inv     *inventory.Inventory
	desired map[string]Desired
	targets map[string]nodes.Target
}

// Changes counts the nodes the plan touches.
func (p *Plan) Changes() int {
	n := 0
	for _, np := range p.Nodes {
		if np.Changes() {
			n++
		}
	}
	return n
}

// Problems lists the nodes whose plan cannot be carried out.
func (p *Plan) Problems() []NodePlan {
	var out []NodePlan
	for _, np := range p.Nodes {
		if np.Action == ActionRefused || np.Action == ActionUnreachable {
			out = append(out, np)
		}
	}
	return out
}

// probeScript reports, in one round trip, what the facts do not: whether the
// service runs, its env file's checksum, storage tools and local volume folders.
func probeScript(service, envPath string, dirs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "if [ -d /run/systemd/system ]; then systemctl is-active --quiet %s && echo active=1; ", service)
	fmt.Fprintf(&b, "elif command -v rc-service >/dev/null 2>&1; then rc-service %s status >/dev/null 2>&1 && echo active=1; fi\n", service)
	fmt.Fprintf(&b, "[ -f %s ] && echo env=$(sha256sum < %s | cut -d' ' -f1)\n", shq(envPath), shq(envPath))
	b.WriteString("PATH=$PATH:/sbin:/usr/sbin\n")
	for cmd := range storageCommands {
		fmt.Fprintf(&b, "command -v %s >/dev/null 2>&1 && echo cmd=%s\n", cmd, cmd)
	}
	for _, d := range dirs {
		fmt.Fprintf(&b, "[ -d %s ] && echo dir=%s\n", shq(d), d)
	}
	b.WriteString("true\n")
	return b.String()
}

func parseProbe(out []byte) (active bool, envSum string, cmds, dirs map[string]bool) {
	cmds, dirs = map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "active":
			active = true
		case "env":
			envSum = v
		case "cmd":
			cmds[v] = true
		case "dir":
			dirs[v] = true
		}
	}
	return
}

// BuildPlan gathers facts from every node in parallel and plans each one.
// It changes nothing. A node that cannot be reached gets an "unreachable" plan.
func BuildPlan(ctx context.Context, inv *inventory.Inventory, o Options) (*Plan, error) {
	version := inv.Cluster.K3s.Version
	if _, err := parseVersion(version); err != nil {
		return nil, fmt.Errorf("%s: cluster.k3s.version %q is a minor version; until rack ships a version catalog, write an exact release such as %s.5+k3s1", inv.Where("cluster.k3s.version"), version, version)
	}
	token, err := Token(inv)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Cluster: inv.Cluster.Name, Version: version, inv: inv, desired: map[string]Desired{}, targets: map[string]nodes.Target{}}
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

	var mu sync.Mutex
	observed := map[string]Observed{}
	fo := o.FanOut
	fo.Serial, fo.StopOnError = false, false
	results := nodes.FanOut(ctx, targets, fo, func(ctx context.Context, h *nodes.Host) error {
		n, _ := inv.Node(h.Target.Name)
		h.Step("gathering facts")
		f, err := h.Gather(ctx)
		if err != nil {
			return err
		}
		h.Step("probing service")
		out, err := h.Output(ctx, probeScript(ServiceName(n), envPathFor(n, f.Init), localDirs(inv, n)), nodes.RunOptions{Privileged: true, Quiet: true})
		if err != nil {
			return err
		}
		active, env, cmds, dirs := parseProbe(out)
		mu.Lock()
		observed[n.Name] = Observed{Facts: f, Active: active, EnvSHA256: env, HaveCommands: cmds, HaveDirs: dirs}
		mu.Unlock()
		return nil
	})
	errs := map[string]error{}
	for _, r := range results {
		if r.Err != nil {
			errs[r.Node] = r.Err
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	arts := &artifacts{bins: o.Binaries, version: version}
	for _, n := range selected {
		if err := errs[n.Name]; err != nil {
			plan.Nodes = append(plan.Nodes, NodePlan{Node: n.Name, Role: Role(n), Arch: n.Arch, Action: ActionUnreachable, To: version,
				Reasons: []string{err.Error()}, Steps: []string{}})
			continue
		}
		obs := observed[n.Name]
		d, err := desiredFor(ctx, inv, n, obs.Facts, token, arts)
		if err != nil {
			plan.Nodes = append(plan.Nodes, NodePlan{Node: n.Name, Role: Role(n), Arch: obs.Facts.Arch, Action: ActionRefused, To: version,
				Reasons: []string{err.Error()}, Steps: []string{}})
			continue
		}
		plan.desired[n.Name] = d
		plan.Nodes = append(plan.Nodes, PlanNode(d, obs))
	}
	return plan, nil
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

// artifacts resolves the binary and images once per arch: resolving means
// hashing a 60 MB binary, which 16 nodes must not do 16 times.
type artifacts struct {
	bins    Binaries
	version string
	byArch  map[string]resolved
}

type resolved struct {
	bin    Artifact
	images []string
	err    error
}

func (a *artifacts) get(ctx context.Context, arch string) (Artifact, []string, error) {
	if r, ok := a.byArch[arch]; ok {
		return r.bin, r.images, r.err
	}
	var r resolved
	r.bin, r.err = a.bins.Binary(ctx, a.version, arch)
	if r.err == nil {
		r.images, r.err = a.bins.AirgapImages(arch)
	}
	if a.byArch == nil {
		a.byArch = map[string]resolved{}
	}
	a.byArch[arch] = r
	return r.bin, r.images, r.err
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
	bin, images, err := arts.get(ctx, arch)
	if err != nil {
		return Desired{}, err
	}
	cfg, err := Config(inv, n, token)
	if err != nil {
		return Desired{}, err
	}
	return Desired{Node: n, Version: inv.Cluster.K3s.Version, Arch: arch, Binary: bin, Images: images, Config: cfg, Unit: unit,
		Packages: DesiredPackages(n), Dirs: localDirs(inv, n)}, nil
}

func nodePath(inv *inventory.Inventory, n inventory.Node) string {
	for i, x := range inv.Nodes {
		if x.Name == n.Name {
			return fmt.Sprintf("nodes[%d]", i)
		}
	}
	return "nodes"
}

// Outcome is what Apply did.
type Outcome struct {
	Results []nodes.Result
	// Kubeconfig is the cluster's admin kubeconfig (nil when the first
	// server could not be reached).
	Kubeconfig *Kubeconfig
	// BytesSent is the payload uploaded to all nodes together.
	BytesSent int64
}

// ErrRefused is returned when a plan has nodes rack must not touch.
var ErrRefused = errors.New("refused")

// Apply carries out a plan: the first server, then the other servers one at a
// time (each joins embedded etcd), then the agents in parallel. Every changed
// node is waited for until Ready through the API. Unreachable nodes fail on
// their own; the others go on. A refused node stops everything before any change.
func Apply(ctx context.Context, plan *Plan, o Options) (*Outcome, error) {
	if bad := plan.refused(); len(bad) > 0 {
		var lines []string
		for _, np := range bad {
			lines = append(lines, np.Node+": "+strings.Join(np.Reasons, "; "))
		}
		return nil, fmt.Errorf("%w: nothing was changed:\n  %s", ErrRefused, strings.Join(lines, "\n  "))
	}
	inv := plan.inv
	out := &Outcome{}
	byName := map[string]NodePlan{}
	for _, np := range plan.Nodes {
		byName[np.Node] = np
	}
	var servers, agents []nodes.Target
	for _, n := range selectNodes(inv, o.Only) {
		t := plan.targets[n.Name]
		if n.IsServer() {
			servers = append(servers, t)
		} else {
			agents = append(agents, t)
		}
	}

	files := &sourceSet{}
	defer files.Close()
	var cs kubernetes.Interface
	step := func(ctx context.Context, h *nodes.Host) error {
		np := byName[h.Target.Name]
		if np.Action == ActionUnreachable {
			return fmt.Errorf("unreachable: %s", strings.Join(np.Reasons, "; "))
		}
		d := plan.desired[np.Node]
		if err := applyNode(ctx, h, np, d, o, files); err != nil {
			return err
		}
		if cs == nil { // the first server: its kubeconfig is how every wait below sees the cluster
			kc, err := fetchKubeconfig(ctx, h, inv, o.readyTimeout())
			if err != nil {
				return err
			}
			if cs, err = kc.Clientset(); err != nil {
				return err
			}
			out.Kubeconfig = kc
		}
		h.Step("waiting until Ready")
		return WaitReady(ctx, cs, np.Node, d.Version, d.Node.Labels, o.readyTimeout())
	}

	fo := o.FanOut
	fo.Serial, fo.StopOnError = true, true
	if len(servers) > 0 {
		// The first server alone: nothing can join before it is up.
		first := nodes.FanOut(ctx, servers[:1], fo, step)
		out.Results = append(out.Results, first...)
		if first[0].Err != nil || cs == nil {
			reason := fmt.Errorf("skipped: the first server %s failed", servers[0].Name)
			for _, t := range append(append([]nodes.Target{}, servers[1:]...), agents...) {
				out.Results = append(out.Results, nodes.Result{Node: t.Name, Err: reason})
			}
			return out, sumBytes(out)
		}
		// Further servers one at a time: each joins etcd, and losing quorum
		// to two half-joined members at once is how clusters die.
		out.Results = append(out.Results, nodes.FanOut(ctx, servers[1:], fo, step)...)
	}
	if len(agents) > 0 {
		fo.Serial, fo.StopOnError = false, false
		out.Results = append(out.Results, nodes.FanOut(ctx, agents, fo, step)...)
	}
	if out.Kubeconfig != nil {
		// rack's own copy, so its commands never depend on the user's kubeconfig.
		if err := out.Kubeconfig.Save(StateKubeconfig(inv)); err != nil {
			return out, err
		}
		if o.Kubeconfig != "" {
			if err := out.Kubeconfig.Merge(o.Kubeconfig); err != nil {
				return out, fmt.Errorf("write kubeconfig %s: %w", o.Kubeconfig, err)
			}
		}
	}
	return out, sumBytes(out)
}

func sumBytes(out *Outcome) error {
	for _, r := range out.Results {
		out.BytesSent += r.BytesSent
	}
	return nodes.Errors(out.Results)
}

func (p *Plan) refused() []NodePlan {
	var out []NodePlan
	for _, np := range p.Nodes {
		if np.Action == ActionRefused {
			out = append(out, np)
		}
	}
	return out
}

// applyNode makes one node match its plan. Each write is atomic and verified
// by the SSH layer; the service restarts only when something it reads changed.
func applyNode(ctx context.Context, h *nodes.Host, np NodePlan, d Desired, o Options, files *sourceSet) error {
	priv := nodes.RunOptions{Privileged: true}
	if np.PiCmdline != "" {
		if err := prepareP(ctx, h, np.PiCmdline, o.rebootTimeout()); err != nil {
			return err
		}
	}
	if len(np.Packages) > 0 {
		h.Step("installing " + strings.Join(np.Packages, " "))
		if err := h.Run(ctx, installPackages(np.Packages), priv); err != nil {
			return fmt.Errorf("install %s: %w", strings.Join(np.Packages, " "), err)
		}
	}
	for _, dir := range np.Dirs {
		h.Step("creating " + dir)
		// Root-owned and closed to other users: pods reach it through the kubelet.
		if err := h.Run(ctx, "install -d -m 0750 "+shq(dir), priv); err != nil {
			return err
		}
	}
	if np.Binary {
		h.Step("uploading k3s " + d.Version)
		src, err := files.Open(d.Binary.Path)
		if err != nil {
			return err
		}
		if _, err := h.Upload(ctx, src, BinaryPath, nodes.FileOptions{Mode: 0o755, Privileged: true}); err != nil {
			return err
		}
		if len(d.Images) > 0 {
			if err := h.Run(ctx, "install -d -m 0755 "+ImagesDir, priv); err != nil {
				return err
			}
			for _, img := range d.Images {
				h.Step("uploading " + filepath.Base(img))
				src, err := files.Open(img)
				if err != nil {
					return err
				}
				if _, err := h.Upload(ctx, src, ImagesDir+"/"+filepath.Base(img), nodes.FileOptions{Mode: 0o644, Privileged: true}); err != nil {
					return err
				}
			}
		}
	}
	if np.Config {
		h.Step("writing config")
		if err := h.Run(ctx, "install -d -m 0755 /etc/rancher/k3s", priv); err != nil {
			return err
		}
		if err := h.WriteSecretFile(ctx, ConfigPath, d.Config, nodes.FileOptions{Mode: 0o600, Privileged: true}); err != nil {
			return err
		}
	}
	if np.Unit {
		h.Step("writing service")
		if err := h.Run(ctx, "install -d -m 0755 "+shq(filepath.Dir(d.Unit.Path))+" "+shq(filepath.Dir(d.Unit.EnvPath)), priv); err != nil {
			return err
		}
		if _, err := h.Upload(ctx, nodes.BytesSource(d.Unit.Content), d.Unit.Path, nodes.FileOptions{Mode: fileMode(d.Unit.Mode), Privileged: true}); err != nil {
			return err
		}
		if _, err := h.Upload(ctx, nodes.BytesSource(d.Unit.Env), d.Unit.EnvPath, nodes.FileOptions{Mode: 0o600, Privileged: true}); err != nil {
			return err
		}
		if err := h.Run(ctx, d.Unit.Enable, priv); err != nil {
			return fmt.Errorf("enable %s: %w", ServiceName(d.Node), err)
		}
	}
	if np.Restart {
		h.Step("restarting " + ServiceName(d.Node))
		if err := h.Run(ctx, d.Unit.Restart, priv); err != nil {
			return fmt.Errorf("restart %s: %w", ServiceName(d.Node), err)
		}
	}
	return nil
}

// installPackages installs with whichever package manager the node has.
func installPackages(pkgs []string) string {
	list := strings.Join(pkgs, " ")
	return `set -e
if command -v apt-get >/dev/null 2>&1; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q ` + list + `
elif command -v dnf >/dev/null 2>&1; then dnf install -y iscsi-initiator-utils nfs-utils
elif command -v apk >/dev/null 2>&1; then apk add open-iscsi nfs-utils
elif command -v zypper >/dev/null 2>&1; then zypper --non-interactive install open-iscsi nfs-client
else echo "no known package manager: install ` + list + ` by hand" >&2; exit 1; fi
if [ -d /run/systemd/system ]; then systemctl enable --now iscsid || true; elif command -v rc-update >/dev/null 2>&1; then rc-update add iscsid default; fi`
}

// prepareP adds the memory cgroup flags to a Pi's cmdline.txt, keeping a
// backup of the original, then reboots the Pi and waits for it to return.
func prepareP(ctx context.Context, h *nodes.Host, line string, timeout time.Duration) error {
	facts, err := h.Gather(ctx)
	if err != nil {
		return err
	}
	path := facts.CmdlinePath
	h.Step("editing " + path)
	// Keep the first original only: a second run must not overwrite it with an edited copy.
	if err := h.Run(ctx, fmt.Sprintf("[ -e %[1]s.rack-backup ] || cp -p %[1]s %[1]s.rack-backup", shq(path)), nodes.RunOptions{Privileged: true}); err != nil {
		return fmt.Errorf("back up %s: %w", path, err)
	}
	if _, err := h.Upload(ctx, nodes.BytesSource([]byte(line)), path, nodes.FileOptions{Mode: 0o755, Privileged: true}); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return Reboot(ctx, h, timeout)
}

// Reboot restarts the node and waits until it is back: a new boot id proves
// the machine really went down, not just that sshd answered in between.
func Reboot(ctx context.Context, h *nodes.Host, timeout time.Duration) error {
	const bootID = "cat /proc/sys/kernel/random/boot_id"
	before, err := h.Output(ctx, bootID, nodes.RunOptions{Quiet: true})
	if err != nil {
		return err
	}
	h.Step("rebooting")
	// Detached and delayed, so the command returns before the connection drops.
	cmd := "nohup sh -c 'sleep 1; if [ -d /run/systemd/system ]; then systemctl reboot; else reboot; fi' >/dev/null 2>&1 &"
	if err := h.Run(ctx, cmd, nodes.RunOptions{Privileged: true, Quiet: true}); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if err := nodes.SleepContext(ctx, 2*time.Second); err != nil {
			return err
		}
		out, err := h.Output(ctx, bootID, nodes.RunOptions{Quiet: true})
		if err == nil && !bytes.Equal(bytes.TrimSpace(out), bytes.TrimSpace(before)) {
			h.Step("back from reboot")
			return nil
		}
		last = err
	}
	if last == nil {
		last = errors.New("it still runs the same boot")
	}
	return fmt.Errorf("did not come back from its reboot within %s (last: %v): check the node's console", timeout, last)
}

// fetchKubeconfig reads k3s.yaml from the first server once k3s has written it.
func fetchKubeconfig(ctx context.Context, h *nodes.Host, inv *inventory.Inventory, timeout time.Duration) (*Kubeconfig, error) {
	h.Step("fetching kubeconfig")
	deadline := time.Now().Add(timeout)
	for {
		data, err := h.Output(ctx, "cat "+KubeconfigPath, nodes.RunOptions{Privileged: true, Quiet: true})
		if err == nil && len(data) > 0 {
			return ParseKubeconfig(data, inv.Cluster.Name, ServerURL(inv.Cluster.APIEndpoint))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("k3s did not write %s within %s: the server did not start; look at its log (journalctl -u k3s)", KubeconfigPath, timeout)
		}
		if err := nodes.SleepContext(ctx, time.Second); err != nil {
			return nil, err
		}
	}
}

// shq quotes s for /bin/sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// sourceSet opens each local file once for all nodes, so it is hashed once.
type sourceSet struct {
	mu sync.Mutex
	m  map[string]*nodes.Source
}

func (s *sourceSet) Open(path string) (*nodes.Source, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if src, ok := s.m[path]; ok {
		return src, nil
	}
	src, err := nodes.OpenSource(path)
	if err != nil {
		return nil, err
	}
	if s.m == nil {
		s.m = map[string]*nodes.Source{}
	}
	s.m[path] = src
	return src, nil
}

func (s *sourceSet) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, src := range s.m {
		src.Close()
	}
}
