package k3s

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
)

// Action is what `rack up` does to a node, from the most to the least work.
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
// the token and the binary it resolved to).
type Desired struct {
	Node    inventory.Node
	Version string
	Arch    string
	Binary  Artifact
	Images  []string
	Config  []byte
	Unit    Unit
	// Packages are the Debian/Alpine/… packages the node's storage needs.
	Packages []string
	// Dirs are local volume folders to create.
	Dirs []string
}

// Observed is what rack found on the node.
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
}

// NodePlan is the plan for one node; it is data, printed by `rack plan` and
// carried out by `rack up`.
type NodePlan struct {
	Node    string   `json:"node"`
	Role    string   `json:"role"`
	Arch    string   `json:"arch"`
	Action  Action   `json:"action"`
	Reasons []string `json:"reasons"`
	From    string   `json:"from,omitempty"`
	To      string   `json:"to"`
	Steps   []string `json:"steps"`

	// What the executor does; derived from the comparison above.
	PiCmdline string   `json:"-"` // new cmdline.txt content when it must change
	Packages  []string `json:"-"`
	Dirs      []string `json:"-"`
	Binary    bool     `json:"-"`
	Config    bool     `json:"-"`
	Unit      bool     `json:"-"`
	Restart   bool     `json:"-"`
}

// Changes reports whether carrying out the plan touches the node.
func (p NodePlan) Changes() bool {
	return p.Action != ActionNothing && p.Action != ActionUnreachable && p.Action != ActionRefused
}

// Package names of the tools Longhorn needs on a node, per command.
var storageCommands = map[string]string{"iscsiadm": "open-iscsi", "mount.nfs": "nfs-common"}

// DesiredPackages lists what a node's storage role needs installed.
func DesiredPackages(n inventory.Node) []string {
	if !n.OffersLonghorn() {
		return nil
	}
	return []string{"open-iscsi", "nfs-common"}
}

// PlanNode compares desired with observed state. It is pure: the same inputs
// always give the same plan, which makes `rack plan` and `rack up` agree.
func PlanNode(d Desired, o Observed) NodePlan {
	f := o.Facts
	p := NodePlan{Node: d.Node.Name, Role: Role(d.Node), Arch: d.Arch, To: d.Version, Reasons: []string{}, Steps: []string{}}
	refuse := func(format string, args ...any) NodePlan {
		p.Action, p.Reasons, p.Steps = ActionRefused, []string{fmt.Sprintf(format, args...)}, []string{}
		return p
	}
	if d.Node.Arch != "" && f.Arch != "" && d.Node.Arch != f.Arch {
		return refuse("the inventory says arch %s but the machine is %s (uname -m: %s): fix nodes[].arch or the address", d.Node.Arch, f.Arch, f.Machine)
	}
	if !f.ArchKnown {
		return refuse("unsupported machine %q: k3s runs on arm64, amd64 and arm", f.Machine)
	}
	if f.K3sUnitPath != "" && !strings.Contains(f.K3sUnitPath, "/"+ServiceName(d.Node)) {
		return refuse("k3s is installed here as %s, but the inventory says role %s: remove the node (rack node remove) and add it again to change its role", f.K3sUnitPath, d.Node.Role)
	}
	if f.K3sInstalled {
		p.From = f.K3sVersion
	}

	if f.IsPi() && f.CmdlinePath != "" {
		if line, changed := PiCmdline(f.Cmdline); changed {
			p.PiCmdline = line
			p.Reasons = append(p.Reasons, fmt.Sprintf("%s lacks %s (k3s needs the memory cgroup)", f.CmdlinePath, strings.Join(piCgroupFlags, " ")))
			p.Steps = append(p.Steps, "edit "+f.CmdlinePath+" (backup kept)", "reboot")
		}
	}
	for _, pkg := range d.Packages {
		if !o.HaveCommands[commandFor(pkg)] {
			p.Packages = append(p.Packages, pkg)
		}
	}
	if len(p.Packages) > 0 {
		p.Reasons = append(p.Reasons, "Longhorn storage needs "+strings.Join(p.Packages, ", "))
		p.Steps = append(p.Steps, "install "+strings.Join(p.Packages, " "))
	}
	for _, dir := range d.Dirs {
		if !o.HaveDirs[dir] {
			p.Dirs = append(p.Dirs, dir)
		}
	}
	if len(p.Dirs) > 0 {
		p.Reasons = append(p.Reasons, "local volume folder(s) missing: "+strings.Join(p.Dirs, ", "))
		p.Steps = append(p.Steps, "create "+strings.Join(p.Dirs, " "))
	}

	switch {
	case !f.K3sInstalled:
		p.Action = ActionInstall
		p.Binary = true
		p.Reasons = append([]string{"k3s is not installed"}, p.Reasons...)
	case f.K3sVersion != d.Version:
		cmp, err := compareVersions(f.K3sVersion, d.Version)
		if err != nil {
			return refuse("installed k3s reports version %q, which rack cannot read: reinstall the node (rack node remove, then rack node add)", f.K3sVersion)
		}
		if cmp > 0 {
			return refuse("k3s %s is installed, newer than the inventory's %s: rack never downgrades; set cluster.k3s.version to %s or newer", f.K3sVersion, d.Version, f.K3sVersion)
		}
		if skip := minorGap(f.K3sVersion, d.Version); skip > 1 {
			return refuse("k3s %s → %s skips %d minor version(s): Kubernetes upgrades one minor at a time; use rack upgrade plan / rack upgrade apply", f.K3sVersion, d.Version, skip-1)
		}
		p.Action = ActionUpgrade
		p.Binary = true
		p.Reasons = append([]string{fmt.Sprintf("k3s %s → %s", f.K3sVersion, d.Version)}, p.Reasons...)
	case f.K3sSHA256 != d.Binary.SHA256:
		p.Action = ActionInstall
		p.Binary = true
		p.Reasons = append([]string{"the installed k3s binary differs from the release's (sha256 " + short(f.K3sSHA256) + " ≠ " + short(d.Binary.SHA256) + ")"}, p.Reasons...)
	}

	if !f.K3sConfigPresent {
		p.Config = true
	} else if changed := configChanges(f.K3sConfig, d.Config); len(changed) > 0 {
		p.Config = true
		if f.K3sInstalled {
			p.Reasons = append(p.Reasons, "config.yaml changes: "+strings.Join(changed, ", "))
		}
	}
	if f.K3sUnit != string(d.Unit.Content) || o.EnvSHA256 != sha256Hex(d.Unit.Env) {
		p.Unit = true
		if f.K3sInstalled && f.K3sUnit != "" {
			p.Reasons = append(p.Reasons, "the service unit differs from rack's")
		}
	}
	p.Restart = p.Binary || p.Config || p.Unit || !o.Active
	if p.Action == "" {
		switch {
		case p.Config || p.Unit || p.PiCmdline != "" || len(p.Packages) > 0 || len(p.Dirs) > 0:
			p.Action = ActionReconfigure
		case !o.Active:
			p.Action = ActionRestart
			p.Reasons = append(p.Reasons, ServiceName(d.Node)+" is installed but not running")
		default:
			p.Action = ActionNothing
		}
	}
	if p.Binary {
		p.Steps = append(p.Steps, "upload k3s "+d.Version+" ("+d.Arch+")")
	}
	if len(d.Images) > 0 && p.Binary {
		p.Steps = append(p.Steps, fmt.Sprintf("upload %d airgap image tarball(s)", len(d.Images)))
	}
	if p.Config {
		p.Steps = append(p.Steps, "write "+ConfigPath)
	}
	if p.Unit {
		p.Steps = append(p.Steps, "write "+d.Unit.Path)
	}
	if p.Restart {
		p.Steps = append(p.Steps, "restart "+ServiceName(d.Node), "wait until Ready")
	}
	return p
}

func commandFor(pkg string) string {
	for cmd, p := range storageCommands {
		if p == pkg {
			return cmd
		}
	}
	return pkg
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

var versionRE = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)\+k3s(\d+)$`)

// parseVersion splits vX.Y.Z+k3sN into its four numbers.
func parseVersion(v string) ([4]int, error) {
	m := versionRE.FindStringSubmatch(v)
	if m == nil {
		return [4]int{}, fmt.Errorf("%q is not a k3s version (vX.Y.Z+k3sN)", v)
	}
	var out [4]int
	for i := range out {
		out[i], _ = strconv.Atoi(m[i+1])
	}
	return out, nil
}

// compareVersions orders k3s versions; +k3sN suffixes order by N.
func compareVersions(a, b string) (int, error) {
	va, err := parseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := parseVersion(b)
	if err != nil {
		return 0, err
	}
	return slices.Compare(va[:], vb[:]), nil
}

// minorGap is how many minors b is ahead of a (same major).
func minorGap(a, b string) int {
	va, err1 := parseVersion(a)
	vb, err2 := parseVersion(b)
	if err1 != nil || err2 != nil || va[0] != vb[0] {
		return 0
	}
	return vb[1] - va[1]
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
