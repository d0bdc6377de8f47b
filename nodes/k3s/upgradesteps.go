package k3s

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/internal/sleep"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/kube"
)

// Upgrader builds the steps of day-2 operations on single nodes (`rack
// upgrade apply`, `rack node remove`) from the same step functions `rack up`
// runs: the verified upload, the bounded restart, the wait for Ready at a
// version, the applied record. Building steps reads; running them (through
// nodes.RunSteps, on the host they were built for) acts.
type Upgrader struct {
	inv  *inventory.Inventory
	opts Options
	cs   kubernetes.Interface

	mu      sync.Mutex
	runs    map[string]*run // by version: a binary is resolved once per version and arch
	targets map[string]nodes.Target
}

// NewUpgrader prepares steps for inv's nodes; cs reaches the cluster (rack's
// kubeconfig), for drains and waits.
func NewUpgrader(inv *inventory.Inventory, o Options, cs kubernetes.Interface) *Upgrader {
	return &Upgrader{inv: inv, opts: o, cs: cs, runs: map[string]*run{}, targets: map[string]nodes.Target{}}
}

// Close releases the local files the steps opened. It may be called more
// than once (a Removal's Run closes its Upgrader, and so may the caller).
func (u *Upgrader) Close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, x := range u.runs {
		x.files.Close()
	}
	clear(u.runs)
}

// Target is the SSH target of an inventory node.
func (u *Upgrader) Target(name string) (nodes.Target, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.targets[name]; ok {
		return t, nil
	}
	n, ok := u.inv.Node(name)
	if !ok {
		return nodes.Target{}, fmt.Errorf("node %s is not in the inventory %s: rack reaches nodes only through it; add it there", name, u.inv.File)
	}
	t, err := u.opts.Resolver.Resolve(n)
	if err != nil {
		return nodes.Target{}, fmt.Errorf("node %s: %w", name, err)
	}
	u.targets[name] = t
	return t, nil
}

// Observe gathers, over SSH and in parallel, the facts and service state of
// the named inventory nodes. It changes nothing. A node that cannot be
// reached is in the error, by name.
func (u *Upgrader) Observe(ctx context.Context, names []string) (map[string]Observed, error) {
	var targets []nodes.Target
	for _, name := range names {
		t, err := u.Target(name)
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	out, res := eachNode(ctx, targets, u.opts.FanOut, func(ctx context.Context, h *nodes.Host) (Observed, error) {
		n, _ := u.inv.Node(h.Target.Name)
		return observe(ctx, h, n, nil)
	})
	if err := nodes.Errors(res); err != nil {
		return out, err
	}
	return out, nil
}

// runFor is the run the steps for version share: its binaries come from the
// version's own airgap folder (see binariesFor) and are resolved once.
func (u *Upgrader) runFor(version string) (*run, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if x, ok := u.runs[version]; ok {
		return x, nil
	}
	b, err := u.binariesFor(version)
	if err != nil {
		return nil, err
	}
	o := u.opts
	o.Binaries = b
	x := &run{inv: u.inv, opts: o, cs: u.cs}
	u.runs[version] = x
	return x, nil
}

// binariesFor is where the k3s of version comes from. Online, the cache and
// the release (verified either way). With an airgap folder: its subfolder
// named after the version (<airgap>/v1.34.2+k3s1/, laid out like the folder
// itself), else the folder itself only for the inventory's own version, the
// one it holds: the airgap binary's checksum file does not say its version,
// and installing another than the step's is what an upgrade must never do.
func (u *Upgrader) binariesFor(version string) (Binaries, error) {
	b := u.opts.Binaries
	if b.Airgap == "" {
		return b, nil
	}
	dir := filepath.Join(b.Airgap, version)
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		b.Airgap = dir
		return b, nil
	}
	if version == u.inv.Cluster.K3s.Version {
		return b, nil
	}
	return Binaries{}, fmt.Errorf("the airgap folder %s has no k3s %s: put that release's binaries, sha256sum-<arch>.txt files and image tarballs in %s (the folder itself holds cluster.k3s.version, %s)",
		b.Airgap, version, dir, u.inv.Cluster.K3s.Version)
}

// Drain says how a node is drained before its upgrade or removal.
type Drain struct {
	Options kube.DrainOptions
	// Skip leaves the node undrained, with this reason (a one-node cluster
	// has nowhere to move its pods).
	Skip string
}

// UpgradeSteps are the steps that move one node to version: drain it
// (cordoned with rack's annotation, so an interrupted run can tell its own
// cordon from the operator's), upload the verified binary (and the
// version's airgap images), restart k3s, wait until the Node is Ready at
// version, record what k3s now runs from (nodes.AppliedPath), uncordon.
// obs is the node as Observe found it. Building the steps checks that the
// binary can be had and reads its checksum; nothing is changed until they run.
func (u *Upgrader) UpgradeSteps(ctx context.Context, name, version string, obs Observed, d Drain) ([]nodes.Step, error) {
	n, ok := u.inv.Node(name)
	if !ok {
		return nil, fmt.Errorf("node %s is not in the inventory %s: rack reaches nodes only through it; add it there", name, u.inv.File)
	}
	f := obs.Facts
	if !f.ArchKnown {
		return nil, fmt.Errorf("node %s: unsupported machine %q (uname -m)", name, f.Machine)
	}
	if !f.K3sInstalled || f.K3sUnit == "" {
		return nil, fmt.Errorf("node %s: k3s is not installed as a service there (%s): it is in the cluster, but not as rack installs k3s; run rack plan", name, BinaryPath)
	}
	unit, err := ServiceUnit(n, f.Init)
	if err != nil {
		return nil, err
	}
	x, err := u.runFor(version)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	sum, _, err := x.opts.Binaries.Checksum(ctx, version, f.Arch)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	images, err := x.opts.Binaries.AirgapImages(f.Arch)
	if err != nil {
		return nil, err
	}
	svc := ServiceName(n)
	var steps []nodes.Step
	if d.Skip != "" {
		steps = append(steps, nodes.Step{Name: "no drain: " + d.Skip, Why: "its pods stop while k3s restarts and start again with it"})
	} else {
		steps = append(steps, u.DrainStep(name, d.Options, "its pods move to other nodes before k3s restarts; PodDisruptionBudgets are honoured"))
	}
	bind := func(f stepFunc) func(context.Context, *nodes.Host) error { return f.bind(x) }
	steps = append(steps, nodes.Step{Name: fmt.Sprintf("upload k3s %s (%s) to %s", version, f.Arch, BinaryPath),
		Why: "the release's binary, checked against its sha256 " + short(sum) + " before it replaces the running one", Do: bind(uploadBinary(version, f.Arch))})
	if len(images) > 0 {
		steps = append(steps, nodes.Step{Name: fmt.Sprintf("upload %d airgap image tarball(s) to %s", len(images), ImagesDir),
			Why: "the airgap images of the version k3s starts", Do: bind(uploadImages(images))})
	}
	// What the service runs from once restarted: the new binary and the
	// files as they are on the node (a pending change of them is rack up's).
	rec := Applied{Version: version, Binary: sum, Config: configRestartSum([]byte(f.K3sConfig)), Unit: sha256Hex([]byte(f.K3sUnit)), Env: obs.EnvSHA256}
	steps = append(steps,
		nodes.Step{Name: "restart " + svc, Why: "k3s runs the new binary only once restarted", Do: bind(restart(unit, svc))},
		nodes.Step{Name: "wait until Ready at " + version, Why: "only the new version on a Ready Node proves the upgrade took effect", Do: bind(waitReady(name, version, unit, n.IsServer() && embeddedEtcd(u.inv)))},
		nodes.Step{Name: "record what k3s runs from in " + nodes.AppliedPath, Why: "rack plan and a resumed upgrade compare the node with this record", Do: bind(writeApplied(rec))},
	)
	if d.Skip == "" {
		steps = append(steps, u.UncordonStep(name, "the node takes pods again"))
	}
	return steps, nil
}

// NeedsRecord reports whether a node running version (its Node says so)
// lacks the applied record of it, while its binary is that version: an
// upgrade interrupted between the wait for Ready and the record.
func (u *Upgrader) NeedsRecord(obs Observed, version string) bool {
	have, ok := parseApplied(obs.Facts.K3sApplied)
	return obs.Facts.K3sVersion == version && (!ok || have.Version != version)
}

// RecordStep writes the applied record of a node that an interrupted
// upgrade left running version without one.
func (u *Upgrader) RecordStep(name, version string, obs Observed) (nodes.Step, error) {
	x, err := u.runFor(version)
	if err != nil {
		return nodes.Step{}, fmt.Errorf("node %s: %w", name, err)
	}
	f := obs.Facts
	rec := Applied{Version: version, Binary: f.K3sSHA256, Config: configRestartSum([]byte(f.K3sConfig)), Unit: sha256Hex([]byte(f.K3sUnit)), Env: obs.EnvSHA256}
	return nodes.Step{Name: "record what k3s runs from in " + nodes.AppliedPath,
		Why: "an interrupted upgrade left " + name + " running " + version + " without the record", Do: writeApplied(rec).bind(x)}, nil
}

// DrainStep cordons and drains the node through the API; its progress
// (pods evicted, PodDisruptionBudgets waited on) goes to the node's
// progress lines.
func (u *Upgrader) DrainStep(name string, o kube.DrainOptions, why string) nodes.Step {
	return nodes.Step{Name: "drain " + name + " (cordon, evict through the Eviction API)", Why: why,
		Do: func(ctx context.Context, h *nodes.Host) error {
			o := o
			o.Out = u.lines(name, o.Out)
			_, err := kube.Drain(ctx, u.cs, name, o)
			return err
		}}
}

// UncordonStep makes the node schedulable again (and forgets rack's cordon).
func (u *Upgrader) UncordonStep(name, why string) nodes.Step {
	return nodes.Step{Name: "uncordon " + name, Why: why,
		Do: func(ctx context.Context, _ *nodes.Host) error { return kube.Uncordon(ctx, u.cs, name) }}
}

// lines sends drain progress to the fan-out's display as the node's lines
// (and to extra, when set).
func (u *Upgrader) lines(node string, extra io.Writer) io.Writer {
	p := u.opts.FanOut.Progress
	if p == nil && extra == nil {
		return io.Discard
	}
	return writerFunc(func(b []byte) (int, error) {
		for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			if p != nil {
				p.Line(node, line)
			}
		}
		if extra != nil {
			return extra.Write(b)
		}
		return len(b), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Folders k3s keeps its state in; an uninstall removes them with
// everything in them (the applied record, the airgap images included).
var k3sDataDirs = []string{"/etc/rancher/k3s", "/var/lib/rancher/k3s"}

// k3sRunDirs are emptied, not removed: they are mount points on some
// machines (a tmpfs under /run, a kubelet root on its own disk), and an empty
// folder left behind is harmless.
var k3sRunDirs = []string{"/var/lib/kubelet", "/run/k3s", "/run/flannel"}

// StopStep stops k3s on the node and keeps it from starting again.
func (u *Upgrader) StopStep(name string, obs Observed) (nodes.Step, error) {
	n, ok := u.inv.Node(name)
	if !ok {
		return nodes.Step{}, fmt.Errorf("node %s is not in the inventory %s: rack reaches nodes only through it; add it there", name, u.inv.File)
	}
	init := obs.Facts.Init
	if init != InitSystemd && init != InitOpenRC {
		return nodes.Step{}, fmt.Errorf("node %s: init system %q is neither systemd nor OpenRC: stop k3s there by hand, then remove %s and %s", name, init, BinaryPath, strings.Join(slices.Concat(k3sDataDirs, k3sRunDirs), ", "))
	}
	svc := ServiceName(n)
	return nodes.Step{Name: "stop and disable " + svc, Why: "k3s must not run (or start again at boot) once removed",
		Do: func(ctx context.Context, h *nodes.Host) error { return h.Run(ctx, stopCmd(init, svc), priv) }}, nil
}

// UninstallSteps remove what rack (or upstream's installer) put on a node
// whose k3s is stopped (StopStep): whatever k3s left running, the unit, the
// binary, the config (with the token), and k3s' data (etcd's, for a server;
// the applied record and airgap images too). Storage rack only prepared
// (Longhorn's folder, local volume folders) is left alone: it is the user's
// data. obs is the node as Observe found it.
func (u *Upgrader) UninstallSteps(name string, obs Observed) ([]nodes.Step, error) {
	n, ok := u.inv.Node(name)
	if !ok {
		return nil, fmt.Errorf("node %s is not in the inventory %s: rack reaches nodes only through it; add it there", name, u.inv.File)
	}
	f := obs.Facts
	if f.Init != InitSystemd && f.Init != InitOpenRC {
		return nil, fmt.Errorf("node %s: init system %q is neither systemd nor OpenRC: stop k3s there by hand, then remove %s and %s", name, f.Init, BinaryPath, strings.Join(slices.Concat(k3sDataDirs, k3sRunDirs), ", "))
	}
	unit, err := ServiceUnit(n, f.Init)
	if err != nil {
		return nil, err
	}
	files := []string{BinaryPath, unit.Path, unit.EnvPath}
	if f.K3sUnitPath != "" && f.K3sUnitPath != unit.Path {
		files = append(files, f.K3sUnitPath)
	}
	all := slices.Concat(files, k3sDataDirs)
	return []nodes.Step{{Name: "stop what k3s left running (containerd shims) and unmount its folders",
		Why: "k3s' service stops only k3s itself (KillMode=process): its containers and mounts outlive it",
		Do:  func(ctx context.Context, h *nodes.Host) error { return h.Run(ctx, cleanupCmd(), priv) },
	}, {Name: "remove " + strings.Join(all, ", ") + " and empty " + strings.Join(k3sRunDirs, ", "),
		Why: "the binary, the service, the config (with the cluster token) and k3s' data; storage folders stay",
		Do: func(ctx context.Context, h *nodes.Host) error {
			return h.Run(ctx, removeAllCmd(f.Init, all, k3sRunDirs), priv)
		},
	}}, nil
}

func stopCmd(init, svc string) nodes.Cmd {
	if init == InitOpenRC {
		return nodes.Sh(`rc-service "$1" stop 2>/dev/null; rc-update del "$1" default 2>/dev/null; true`, svc)
	}
	return nodes.Sh(`systemctl stop "$1" 2>/dev/null; systemctl disable "$1" 2>/dev/null; true`, svc)
}

// cleanupCmd does what upstream's k3s-killall.sh does for the parts a
// re-install would trip over: it stops the containerd shims of k3s' own
// containerd (found by their path under k3s' data folder, never by a broad
// name) and unmounts what is mounted under k3s' folders, deepest first.
func cleanupCmd() nodes.Cmd {
	return nodes.Sh(`for p in /proc/[0-9]*; do
  exe=$(readlink "$p/exe" 2>/dev/null) || continue
  case "$exe" in /var/lib/rancher/k3s/data/*/bin/containerd-shim*) kill -9 "${p#/proc/}" 2>/dev/null;; esac
done
for m in $(awk '$2 ~ "^/(run/k3s|var/lib/kubelet|var/lib/rancher/k3s)/" {print $2}' /proc/self/mounts | sort -r); do
  umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
done
for i in cni0 flannel.1 flannel-v6.1 flannel-wg flannel-wg-v6; do
  [ -e "/sys/class/net/$i" ] && ip link delete "$i" 2>/dev/null
done
true`)
}

// removeAllCmd removes paths and empties dirs (the "--" between them is
// the separator: no path rack passes is "--").
func removeAllCmd(init string, paths, dirs []string) nodes.Cmd {
	reload := `systemctl daemon-reload 2>/dev/null`
	if init == InitOpenRC {
		reload = `true`
	}
	args := append(append(append([]string{}, paths...), "--"), dirs...)
	return nodes.Sh(`empty=
for p in "$@"; do
  if [ "$p" = -- ]; then empty=1; continue; fi
  if [ -z "$empty" ]; then rm -rf -- "$p" || exit 1
  elif [ -d "$p" ]; then find "$p" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + || exit 1
  fi
done
`+reload+`
true`, args...)
}

// Removal is `rack node remove`'s plan: what stands in the way, and the
// steps, in order. It is data until Run.
type Removal struct {
	Node string `json:"node"`
	Role string `json:"role"`
	// Refusals stop the removal unless --force.
	Refusals []string `json:"refusals"`
	// Warnings are printed, and change nothing.
	Warnings []string     `json:"warnings"`
	Steps    []nodes.Step `json:"steps"`

	reachable bool
	u         *Upgrader
}

// RemoveOptions are `rack node remove`'s flags.
type RemoveOptions struct {
	// Force removes the last server, breaks etcd quorum, or removes an
	// unreachable node from the cluster without uninstalling it.
	Force bool
	Drain kube.DrainOptions
}

// Labels k3s puts on its servers.
const (
	labelControlPlane = "node-role.kubernetes.io/control-plane"
	labelEtcd         = "node-role.kubernetes.io/etcd"
)

// PlanRemoval plans the removal of an inventory node: drain it, (an agent)
// stop k3s, delete its Node, (a server) wait until k3s has removed its etcd
// member (k3s' etcd member controller does that when the Node is deleted:
// the server must still be running, and its member counts for the quorum
// the removal needs), stop k3s, then uninstall it. It refuses to remove the
// last server, the first server while others remain (the others join it and
// the API endpoint defaults to it), or a member whose removal leaves etcd
// without quorum, unless o.Force. It reads the cluster and the node; it
// changes nothing.
func (u *Upgrader) PlanRemoval(ctx context.Context, name string, o RemoveOptions) (*Removal, error) {
	n, ok := u.inv.Node(name)
	if !ok {
		return nil, fmt.Errorf("node %s is not in the inventory %s: rack reaches nodes through it, so keep its entry until rack node remove is done", name, u.inv.File)
	}
	r := &Removal{Node: name, Role: n.Role, Refusals: []string{}, Warnings: []string{}, Steps: []nodes.Step{}, u: u}
	list, err := u.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: the API server did not answer: %w", u.inv.Cluster.Name, err)
	}
	var self *corev1.Node
	var servers, members, healthy []string
	for i := range list.Items {
		k := &list.Items[i]
		if k.Name == name {
			self = k
		}
		if _, ok := k.Labels[labelControlPlane]; ok || (k.Name == name && n.IsServer()) {
			servers = append(servers, k.Name)
			if _, ok := k.Labels[labelEtcd]; ok {
				members = append(members, k.Name)
				if kube.NodeReady(k) {
					healthy = append(healthy, k.Name)
				}
			}
		}
	}
	isServer := n.IsServer() || (self != nil && self.Labels[labelControlPlane] != "")
	if isServer {
		r.Role = inventory.RoleServer
		r.serverChecks(n, servers, members, healthy)
	}

	obs, err := u.Observe(ctx, []string{name})
	r.reachable = err == nil
	if err != nil {
		if !o.Force {
			return nil, fmt.Errorf("%w: rack node remove uninstalls k3s there over SSH; bring it back, or pass --force to remove it from the cluster only (and uninstall k3s there by hand later)", err)
		}
		r.Warnings = append(r.Warnings, name+" cannot be reached over SSH: it is removed from the cluster only; uninstall k3s on it by hand when it is back (or reinstall it)")
	}

	// Drain, unless there is nothing to drain or nowhere to move pods.
	switch {
	case self == nil:
		r.Warnings = append(r.Warnings, name+" is not in the cluster: only its k3s is uninstalled")
	case len(list.Items) == 1:
		r.Warnings = append(r.Warnings, name+" is the cluster's only node: it is not drained")
	case !kube.NodeReady(self):
		r.Warnings = append(r.Warnings, name+" is not Ready, so its pods cannot be evicted: deleting its Node lets their controllers replace them elsewhere")
	default:
		d := o.Drain
		d.By = kube.CordonedByRemove
		r.Steps = append(r.Steps, u.DrainStep(name, d, "its pods move to other nodes before it goes; PodDisruptionBudgets are honoured"))
	}
	var stop nodes.Step
	if r.reachable {
		if stop, err = u.StopStep(name, obs[name]); err != nil {
			return nil, err
		}
	}
	if !isServer && r.reachable {
		r.Steps = append(r.Steps, stop)
	}
	if self != nil {
		why := "the cluster forgets the node; its pods' controllers replace them elsewhere"
		if isServer && len(members) > 0 {
			why = "k3s' etcd member controller removes the server's etcd member when its Node is deleted, while the server still runs"
		}
		r.Steps = append(r.Steps, nodes.Step{Name: "delete Node " + name, Why: why,
			Do: func(ctx context.Context, _ *nodes.Host) error { return u.deleteNode(ctx, name) }})
	}
	if isServer && contains(members, name) {
		if other := u.otherServer(list.Items, name); other != "" {
			r.Steps = append(r.Steps, nodes.Step{Name: "wait until " + name + " is no longer an etcd member (asked through " + other + ")",
				Why: "etcd must have let go of the member before the server stops, or the cluster counts a dead member against its quorum",
				Do:  func(ctx context.Context, _ *nodes.Host) error { return u.waitMemberGone(ctx, other, n) }})
		} else {
			r.Warnings = append(r.Warnings, "no other Ready server to ask for the etcd member list: the removal of "+name+"'s member is not checked")
		}
	}
	if isServer && r.reachable {
		r.Steps = append(r.Steps, stop)
	}
	if r.reachable {
		steps, err := u.UninstallSteps(name, obs[name])
		if err != nil {
			return nil, err
		}
		r.Steps = append(r.Steps, steps...)
	}
	return r, nil
}

func (r *Removal) serverChecks(n inventory.Node, servers, members, healthy []string) {
	name := n.Name
	others := len(servers)
	if contains(servers, name) {
		others--
	}
	if others == 0 {
		r.Refusals = append(r.Refusals, name+" is the cluster's last server: without it the cluster has no API server and no datastore; pass --force to remove it all the same")
		return
	}
	if s := r.u.inv.Servers(); len(s) > 0 && s[0].Name == name {
		r.Refusals = append(r.Refusals, name+" is the inventory's first server: the other servers joined it and the API endpoint defaults to it; "+
			"remove the other servers first, or move another server to the top of nodes (and set cluster.apiEndpoint) and run rack up before removing it; --force goes on anyway")
	}
	if !contains(members, name) {
		return
	}
	// The removal needs a quorum of today's members, and leaves one that
	// must still have a quorum of healthy members.
	now := len(members)
	left := now - 1
	up := len(healthy)
	if contains(healthy, name) {
		if up < now/2+1 {
			r.Refusals = append(r.Refusals, fmt.Sprintf("etcd has %d member(s) but only %d Ready: it has no quorum (%d) to remove a member; bring the others back first, or pass --force", now, up, now/2+1))
		}
		up--
	}
	if left > 0 && up < left/2+1 {
		r.Refusals = append(r.Refusals, fmt.Sprintf("removing %s leaves %d etcd member(s) of which %d are Ready, below their quorum of %d: the cluster would stop; bring the others back first, or pass --force", name, left, up, left/2+1))
	}
	if left == 2 {
		r.Warnings = append(r.Warnings, "etcd keeps 2 members, which tolerate no failure: add a server (rack node add) to get back to 3")
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// otherServer is a Ready server in the inventory other than name, to ask etcd through.
func (u *Upgrader) otherServer(ns []corev1.Node, name string) string {
	for _, s := range u.inv.Servers() {
		for i := range ns {
			if ns[i].Name == s.Name && s.Name != name && kube.NodeReady(&ns[i]) {
				return s.Name
			}
		}
	}
	return ""
}

// Blocked reports whether the removal is refused, given --force.
func (r *Removal) Blocked(force bool) bool { return len(r.Refusals) > 0 && !force }

// Run carries the removal out on the node (the API steps need no host;
// an unreachable node, with --force, gets only those).
func (r *Removal) Run(ctx context.Context) error {
	defer r.u.Close()
	if !r.reachable {
		for _, s := range r.Steps {
			if s.Do == nil {
				continue
			}
			if p := r.u.opts.FanOut.Progress; p != nil {
				p.Step(r.Node, s.Name)
			}
			if err := s.Do(ctx, nil); err != nil {
				return fmt.Errorf("%s: %s: %w", r.Node, s.Name, err)
			}
		}
		return nil
	}
	t, err := r.u.Target(r.Node)
	if err != nil {
		return err
	}
	fo := r.u.opts.FanOut
	fo.Serial, fo.StopOnError = true, true
	res := nodes.FanOut(ctx, []nodes.Target{t}, fo, func(ctx context.Context, h *nodes.Host) error {
		return nodes.RunSteps(ctx, h, r.Steps)
	})
	return nodes.Errors(res)
}

// deleteNode deletes the Node and waits until it is gone.
func (u *Upgrader) deleteNode(ctx context.Context, name string) error {
	err := u.cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting Node %s: %w", name, err)
	}
	deadline := time.Now().Add(u.opts.readyTimeout())
	for {
		_, err := u.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s is still there %s after its deletion (a finalizer?): kubectl get node %s -o yaml shows what holds it", name, u.opts.readyTimeout(), name)
		}
		if err := sleep.For(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// EtcdMember is one member of the cluster's etcd.
type EtcdMember struct {
	ID         string   `json:"ID"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
}

// Is reports whether the member is the node's: k3s names members after the
// node (<name>-<suffix>) and advertises the node's address.
func (m EtcdMember) Is(n inventory.Node) bool {
	if m.Name == n.Name || strings.HasPrefix(m.Name, n.Name+"-") {
		return true
	}
	for _, p := range m.PeerURLs {
		if u, err := url.Parse(p); err == nil && u.Hostname() == n.Address {
			return true
		}
	}
	return false
}

// Paths of k3s' etcd client certificate on a server.
const (
	etcdTLSDir    = "/var/lib/rancher/k3s/server/tls/etcd"
	etcdClientURL = "127.0.0.1:2379"
)

// EtcdMembers lists the etcd members as the server on h sees them, through
// etcd's JSON gateway on the server's loopback (reached through the SSH
// connection, so etcd's port need not be open to the network), with k3s'
// etcd client certificate when the server has one. The certificate's key is
// read into memory only.
func EtcdMembers(ctx context.Context, h *nodes.Host) ([]EtcdMember, error) {
	body, err := etcdGateway(ctx, h, "/v3/cluster/member/list", "{}")
	if err != nil {
		return nil, err
	}
	var out struct {
		Members []EtcdMember `json:"members"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("%s: etcd member list: %w", h.Target.Name, err)
	}
	return out.Members, nil
}

// waitMemberGone waits until the etcd the other server sees has no member
// for n.
func (u *Upgrader) waitMemberGone(ctx context.Context, other string, n inventory.Node) error {
	t, err := u.Target(other)
	if err != nil {
		return err
	}
	h, err := nodes.Connect(ctx, t, u.opts.FanOut.Connect)
	if err != nil {
		return err
	}
	defer h.Close()
	timeout := u.opts.readyTimeout()
	deadline := time.Now().Add(timeout)
	for {
		ms, err := EtcdMembers(ctx, h)
		last := ""
		if err == nil {
			found := false
			for _, m := range ms {
				if m.Is(n) {
					found, last = true, fmt.Sprintf("member %s (%s) is still listed", m.Name, strings.Join(m.PeerURLs, ","))
				}
			}
			if !found {
				return nil
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s's etcd member was not removed within %s (%s): k3s removes it when the Node is deleted; look at the k3s log on %s (journalctl -u k3s), then run rack node remove %s again", n.Name, timeout, last, other, n.Name)
		}
		if err := sleep.For(ctx, time.Second); err != nil {
			return err
		}
	}
}
