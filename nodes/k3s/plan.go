package k3s

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/kube"
)

// Action summarises a node's plan, from the most to the least work.
type Action string

// Actions, as `rack plan` prints them.
const (
	ActionInstall     Action = "install"
	ActionUpgrade     Action = "upgrade"
	ActionReconfigure Action = "reconfigure"
	ActionRestart     Action = "restart"
	ActionNothing     Action = "nothing"
	// ActionUnreachable and ActionRefused are plans that cannot be carried out.
	ActionUnreachable Action = "unreachable"
	ActionRefused     Action = "refused"
)

// Desired is what a node should run, computed from the inventory alone (plus
// the token and the release's checksum of the binary).
type Desired struct {
	Node    inventory.Node
	Version string
	Arch    string
	// BinarySHA256 is the release's checksum of the binary for Arch.
	BinarySHA256 string
	Images       []string
	Config       []byte
	Unit         Unit
	// Packages are what the node's storage needs installed.
	Packages []nodes.Package
	// Dirs are local volume folders to create.
	Dirs []string
	// FirstServer is set on the server every other node joins and whose
	// kubeconfig rack fetches.
	FirstServer bool
	// EtcdMember is set on a server of a cluster on embedded etcd (more
	// than one server): k3s names its etcd member on its Node.
	EtcdMember bool
}

// Observed is what rack found on the node (and about it in the API).
type Observed struct {
	Facts nodes.Facts
	// Active reports whether the k3s service runs.
	Active bool
	// EnvSHA256 is the sha256 of the unit's environment file ("" if absent).
	EnvSHA256 string
	// HaveCommands are the commands found on the node (iscsiadm, mount.nfs).
	HaveCommands map[string]bool
	// HaveDirs are the local volume folders that exist.
	HaveDirs map[string]bool
	// Node is the node's Node object, nil when it is not registered or the
	// API could not be asked.
	Node *corev1.Node
}

// NodePlan is the plan for one node: the steps `rack up` runs on it, each
// with its reason. It is data: `rack plan` prints it, Apply runs the steps.
type NodePlan struct {
	Node    string       `json:"node"`
	Role    string       `json:"role"`
	Arch    string       `json:"arch"`
	Action  Action       `json:"action"`
	Reasons []string     `json:"reasons"`
	From    string       `json:"from,omitempty"`
	To      string       `json:"to"`
	Steps   []nodes.Step `json:"steps"`
}

// Changes reports whether carrying out the plan touches the node.
func (p NodePlan) Changes() bool {
	return p.Action != ActionNothing && p.Action != ActionUnreachable && p.Action != ActionRefused
}

// Applied is the record rack keeps on the node (nodes.AppliedPath) of what
// the running k3s service was started from. It is written only once the
// service has restarted and the node is Ready at the version, so a run killed
// after writing a file but before the restart leaves a record that no longer
// matches, and the next plan restarts the service.
type Applied struct {
	Version string `json:"version"`
	Binary  string `json:"binary"`
	// Config is the sha256 of config.yaml without the keys k3s reads only at
	// registration (labels, taints).
	Config string `json:"config"`
	Unit   string `json:"unit"`
	Env    string `json:"env"`
}

// appliedFor is the record a node has once it runs d.
func appliedFor(d Desired) Applied {
	return Applied{Version: d.Version, Binary: d.BinarySHA256, Config: configRestartSum(d.Config),
		Unit: sha256Hex(d.Unit.Content), Env: sha256Hex(d.Unit.Env)}
}

func (a Applied) json() []byte {
	b, _ := json.MarshalIndent(a, "", "  ") // only strings: cannot fail
	return append(b, '\n')
}

func parseApplied(s string) (Applied, bool) {
	var a Applied
	if s == "" || json.Unmarshal([]byte(s), &a) != nil {
		return Applied{}, false
	}
	return a, true
}

// configRestartSum hashes config.yaml without its registration-only keys.
func configRestartSum(cfg []byte) string {
	var m map[string]any
	if yaml.Unmarshal(cfg, &m) != nil {
		return sha256Hex(cfg)
	}
	for _, k := range registrationOnly {
		delete(m, k)
	}
	b, _ := json.Marshal(m) // sorted keys: a stable form
	return sha256Hex(b)
}

// planner builds one node's plan; the steps it creates close over x, which
// stays untouched until Apply runs them.
type planner struct {
	d  Desired
	o  Observed
	x  *run
	np NodePlan
	// what changes, for the restart decision and the action
	binary, config, unit bool
	restart, other       bool
}

// add appends a step that changes the node (other than restarting it).
func (p *planner) add(name, why string, do stepFunc) {
	p.other = true
	p.step(name, why, do)
}

func (p *planner) step(name, why string, do stepFunc) {
	p.np.Steps = append(p.np.Steps, nodes.Step{Name: name, Why: why, Do: do.bind(p.x)})
}

func (p *planner) reason(why string) { p.np.Reasons = append(p.np.Reasons, why) }

// PlanNode compares desired with observed state and lists the steps that
// bring the node there, each with its reason. It is pure: the same inputs
// always give the same plan, which is how `rack plan` and `rack up` agree;
// the steps' work happens only when Apply runs them (through x).
func PlanNode(d Desired, o Observed, x *run) NodePlan {
	f := o.Facts
	p := &planner{d: d, o: o, x: x, np: NodePlan{Node: d.Node.Name, Role: Role(d.Node), Arch: d.Arch, To: d.Version, Reasons: []string{}, Steps: []nodes.Step{}}}
	if reason := refusal(d, f); reason != "" {
		p.np.Action, p.np.Reasons = ActionRefused, []string{reason}
		return p.np
	}
	if f.K3sInstalled {
		p.np.From = f.K3sVersion
	}
	if refused := p.binaryPlan(); refused != "" {
		p.np.Action, p.np.Reasons, p.np.Steps = ActionRefused, []string{refused}, []nodes.Step{}
		return p.np
	}
	p.cleanup()
	p.pi()
	p.storage()
	p.files()
	p.service()
	p.labels()
	p.np.Action = p.action()
	return p.np
}

// refusal says why rack must not touch the node at all, or "".
func refusal(d Desired, f nodes.Facts) string {
	switch {
	case d.Node.Arch != "" && f.Arch != "" && d.Node.Arch != f.Arch:
		return fmt.Sprintf("the inventory says arch %s but the machine is %s (uname -m: %s): fix nodes[].arch or the address", d.Node.Arch, f.Arch, f.Machine)
	case !f.ArchKnown:
		return fmt.Sprintf("unsupported machine %q: k3s runs on arm64, amd64 and arm", f.Machine)
	}
	if f.K3sUnitPath != "" {
		if installed := strings.TrimSuffix(path.Base(f.K3sUnitPath), ".service"); installed != ServiceName(d.Node) {
			role := map[string]string{"k3s": "server", "k3s-agent": "agent"}[installed]
			return fmt.Sprintf("k3s is installed here as %s (role %s), but the inventory says role %s: rack never changes a node's role in place; remove the node (rack node remove) and add it again",
				f.K3sUnitPath, dashed(role), d.Node.Role)
		}
	}
	if !f.IsPi() && f.CgroupVersion != 0 && !f.MemoryCgroup {
		return "the memory cgroup is off, and k3s needs it: add cgroup_enable=memory to the kernel command line (or enable the memory controller) and reboot"
	}
	return ""
}

func dashed(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// binaryPlan decides about the binary; a non-empty result is a refusal.
func (p *planner) binaryPlan() string {
	d, f := p.d, p.o.Facts
	switch {
	case !f.K3sInstalled:
		p.binary = true
		p.reason("k3s is not installed")
	case f.K3sVersion != d.Version:
		cur, err1 := inventory.ParseK3sVersion(f.K3sVersion)
		want, err2 := inventory.ParseK3sVersion(d.Version)
		if err1 != nil || err2 != nil {
			return fmt.Sprintf("installed k3s reports version %q, which rack cannot read: reinstall the node (rack node remove, then rack node add)", f.K3sVersion)
		}
		if cur.Compare(want) > 0 {
			return fmt.Sprintf("k3s %s is installed, newer than the inventory's %s: rack never downgrades; set cluster.k3s.version to %s or newer (if an interrupted rack upgrade apply put it there, run rack upgrade apply again to finish)", f.K3sVersion, d.Version, f.K3sVersion)
		}
		// Version changes drain and restart one node at a time, servers
		// first, one minor at a time: rack upgrade apply's work, not rack up's.
		return fmt.Sprintf("k3s %s is installed and the inventory says %s: rack up does not change versions; use rack upgrade apply --to %s (rack upgrade plan --to %s shows the path)", f.K3sVersion, d.Version, d.Version, d.Version)
	case f.K3sSHA256 != d.BinarySHA256:
		p.binary = true
		p.reason("the installed k3s binary differs from the release's (sha256 " + short(f.K3sSHA256) + " ≠ " + short(d.BinarySHA256) + ")")
	}
	return ""
}

// tempFile matches what Upload names its temp files, in the folders rack writes.
var tempFile = regexp.MustCompile(`^/(usr/local/bin|etc/rancher/k3s|etc/systemd/system|etc/init\.d|boot/firmware|boot|var/lib/rancher/k3s/agent/images)/\.[^/]+\.rack-tmp-[0-9a-f]+$`)

func (p *planner) cleanup() {
	var files []string
	for _, f := range p.o.Facts.TempFiles {
		if tempFile.MatchString(f) {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		return
	}
	p.add(fmt.Sprintf("remove %d temp file(s) of an interrupted upload", len(files)),
		"an earlier run was stopped during an upload and left "+strings.Join(files, ", "), removeFiles(files))
}

func (p *planner) pi() {
	f := p.o.Facts
	if !f.IsPi() || f.CmdlinePath == "" {
		return
	}
	if line, changed := PiCmdline(f.Cmdline); changed {
		why := fmt.Sprintf("%s lacks %s (k3s needs the memory cgroup)", f.CmdlinePath, strings.Join(piCgroupFlags, " "))
		p.reason(why)
		p.add("edit "+f.CmdlinePath+" (the original kept as cmdline.txt.rack-backup)", why, editCmdline(f.CmdlinePath, line))
		p.add("reboot", "the kernel reads cmdline.txt only when it boots", reboot())
		return
	}
	if f.CgroupVersion != 0 && !f.MemoryCgroup {
		why := f.CmdlinePath + " has the memory cgroup flags but the memory cgroup is off: the reboot after the edit has not happened yet"
		p.reason(why)
		p.add("reboot", why, reboot())
	}
}

func (p *planner) storage() {
	var missing []nodes.Package
	for _, pkg := range p.d.Packages {
		if !p.o.HaveCommands[pkg.Command] {
			missing = append(missing, pkg)
		}
	}
	if len(missing) > 0 {
		why := "Longhorn storage needs " + nodes.PackageNames(missing)
		p.reason(why)
		p.add("install "+nodes.PackageNames(missing), why, install(missing))
	}
	for _, dir := range p.d.Dirs {
		if !p.o.HaveDirs[dir] {
			why := "local volume folder " + dir + " is missing"
			p.reason(why)
			p.add("create "+dir, why, mkdir(dir))
		}
	}
}

func (p *planner) files() {
	d, f := p.d, p.o.Facts
	if p.binary {
		p.add(fmt.Sprintf("upload k3s %s (%s) to %s", d.Version, d.Arch, BinaryPath), p.np.Reasons[0], uploadBinary(d.Version, d.Arch))
		if len(d.Images) > 0 {
			p.add(fmt.Sprintf("upload %d airgap image tarball(s) to %s", len(d.Images), ImagesDir), "the airgap images of the version k3s starts", uploadImages(d.Images))
		}
	}
	switch changed := configChanges(f.K3sConfig, d.Config); {
	case !f.K3sConfigPresent:
		p.config = true
		p.add("write "+ConfigPath, "k3s reads every setting from it (0600: it holds the token)", writeConfig(d.Config))
	case len(changed) > 0:
		p.config = true
		why := "config.yaml changes: " + strings.Join(changed, ", ")
		if f.K3sInstalled {
			p.reason(why)
		}
		p.add("write "+ConfigPath, why, writeConfig(d.Config))
	}
	if f.K3sUnit != string(d.Unit.Content) || p.o.EnvSHA256 != sha256Hex(d.Unit.Env) {
		p.unit = true
		why := "the service is not installed"
		if f.K3sInstalled && f.K3sUnit != "" {
			why = "the service unit differs from rack's"
			p.reason(why)
		}
		p.add("write "+d.Unit.Path, why, writeUnit(d.Unit))
	}
}

// service decides about the restart, the wait for Ready and the record.
func (p *planner) service() {
	d, f, o := p.d, p.o.Facts, p.o
	name := ServiceName(d.Node)
	want := appliedFor(d)
	have, recorded := parseApplied(f.K3sApplied)
	var why string
	switch {
	case p.binary || p.unit:
		why = "it must run the new " + map[bool]string{true: "binary", false: "unit"}[p.binary]
	case p.config && configRestartSum([]byte(f.K3sConfig)) != want.Config:
		why = "it reads config.yaml only when it starts"
	case !o.Active && f.K3sInstalled:
		why = name + " is installed but not running"
		p.reason(why)
	case !recorded && f.K3sInstalled:
		why = "there is no record of what the running k3s started from (" + nodes.AppliedPath + "): an earlier run stopped before it finished, or the node was set up without rack"
		p.reason(why)
	case recorded && have != want:
		why = "its files changed but it was not restarted since: an earlier run was interrupted before the restart"
		p.reason(why)
	}
	if why != "" {
		p.restart = true
		p.step("restart "+name, why, restart(d.Unit, name))
	}
	if d.FirstServer {
		p.step("fetch the kubeconfig", "rack reaches the cluster's API through the first server", fetchKubeconfig())
	}
	if why != "" {
		p.step("wait until Ready at "+d.Version, "only the new version on a Ready Node proves the restart took effect", waitReady(d.Node.Name, d.Version, d.Unit, d.EtcdMember))
		p.step("record what k3s runs from in "+nodes.AppliedPath, "the next run restarts k3s if this record and its files disagree", writeApplied(want))
	}
}

// labels reconciles labels and taints through the API: k3s applies
// node-label and node-taint only when a node first registers, and a kubelet
// may not set labels such as node-role.kubernetes.io/worker at all.
func (p *planner) labels() {
	d := p.d
	want := kube.Want{Labels: d.Node.Labels, Taints: taints(d.Node)}
	if p.o.Node != nil {
		c := kube.Diff(p.o.Node, want)
		if c.None() && p.o.Node.Annotations[kube.AnnotationLabels] == labelRecord(want) && p.o.Node.Annotations[kube.AnnotationTaints] == taintRecord(want) {
			return
		}
		why := "k3s applies node-label and node-taint only when a node first registers"
		if !c.None() {
			p.reason("labels and taints: " + c.String())
		} else {
			why = "rack records which labels and taints it manages, so removing one from the inventory removes it from the Node"
		}
		p.add("set labels and taints through the API", why, reconcileLabels(d.Node.Name, want))
		return
	}
	if len(want.Labels) == 0 && len(want.Taints) == 0 {
		return
	}
	why := "rack records the labels and taints it manages on the Node"
	for k := range want.Labels {
		if !kube.KubeletMaySet(k) {
			why = "a kubelet may not set " + k + " on its own Node (NodeRestriction)"
			break
		}
	}
	p.add("set labels and taints through the API", why, reconcileLabels(d.Node.Name, want))
}

func labelRecord(w kube.Want) string {
	keys := make([]string, 0, len(w.Labels))
	for k := range w.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func taintRecord(w kube.Want) string {
	s := make([]string, len(w.Taints))
	for i, t := range w.Taints {
		s[i] = t.String()
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func taints(n inventory.Node) []inventory.Taint {
	var out []inventory.Taint
	for _, s := range n.Taints {
		if t, err := inventory.ParseTaint(s); err == nil { // validated on load
			out = append(out, t)
		}
	}
	return out
}

func (p *planner) action() Action {
	f := p.o.Facts
	switch {
	case !p.other && !p.restart:
		return ActionNothing
	case !f.K3sInstalled || (p.binary && f.K3sVersion == p.d.Version):
		return ActionInstall
	case p.binary:
		return ActionUpgrade
	case !p.other:
		return ActionRestart
	}
	return ActionReconfigure
}

// configChanges names the top-level keys whose values differ between the
// installed and the desired config. Values are never shown: one is the token.
func configChanges(current string, desired []byte) []string {
	var cur, want map[string]any
	if yaml.Unmarshal([]byte(current), &cur) != nil {
		return []string{"(the installed config.yaml is not valid YAML)"}
	}
	if err := yaml.Unmarshal(desired, &want); err != nil {
		return []string{"(rack's config.yaml is not valid YAML)"}
	}
	keys := map[string]bool{}
	for k := range cur {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		if fmt.Sprint(cur[k]) != fmt.Sprint(want[k]) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	if len(out) == 0 && current != string(desired) {
		out = []string{"(formatting)"}
	}
	return out
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	if sum == "" {
		return "none"
	}
	return sum
}
