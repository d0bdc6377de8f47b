// Package upgrade plans k3s upgrades. Planning is pure: (catalog, the nodes as
// they run, target, date) → a plan or a refusal that says what to do. It never
// talks to a node or the API; the executor (rack upgrade apply) runs the plan.
package upgrade

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes/k3s/catalog"
)

// Node is one cluster node as it runs: its role and its kubelet's version.
type Node struct {
	Name    string `json:"name"`
	Role    string `json:"role"` // inventory.RoleServer or inventory.RoleAgent
	Version string `json:"version"`
}

// Request is what a plan is made from.
type Request struct {
	Catalog *catalog.Catalog
	Nodes   []Node       // the cluster; empty when planning offline from From
	From    string       // plan offline from this exact version (rack upgrade plan --from)
	To      string       // an exact version, a minor (v1.34: its newest release), or "" for the stable channel (or the newest version the cluster runs, when past it)
	At      catalog.Date // the support window is checked at this date
}

// Plan is the upgrade path, one step per version.
//
// How steps run: a step's Nodes are the nodes that still need its version,
// servers first, then agents, each in the order the request gave them. The
// first Servers names are servers; the executor upgrades them one at a time
// (etcd quorum, and each API server must be back before the next goes), and
// only after the last of them the agents (those may go in parallel). So no
// kubelet is ever newer than an API server. A node already at or past a
// step's version is not in it, which is how a partly upgraded cluster plans
// only what is left.
type Plan struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Steps []Step `json:"steps"`
}

// Step moves Nodes to Version.
type Step struct {
	Version string   `json:"version"`
	Nodes   []string `json:"nodes"`
	Servers int      `json:"servers"` // how many of Nodes, from the front, are servers
	// RemovedAPIs are the API versions the step's minor no longer serves, on the
	// step that enters that minor: objects still stored under them must be
	// migrated first (the executor's pre-flight looks for them).
	RemovedAPIs []catalog.RemovedAPI `json:"removedAPIs,omitempty"`
}

// Refusal is a plan rack will not make, with the nodes at fault and the fix.
type Refusal struct {
	Reason string
	Nodes  []string
	Fix    string
}

func (r *Refusal) Error() string {
	msg := r.Reason
	if len(r.Nodes) > 0 {
		msg += " (" + strings.Join(r.Nodes, ", ") + ")"
	}
	return msg + ": " + r.Fix
}

func refuse(nodes []string, fix, format string, args ...any) *Refusal {
	return &Refusal{Reason: fmt.Sprintf(format, args...), Nodes: nodes, Fix: fix}
}

// node is a Node with its version parsed, as the plan moves it along.
type node struct {
	name    string
	server  bool
	version inventory.K3sVersion
}

// Make plans the upgrade, or refuses with the reason and the fix. Rules
// (SPEC): one minor at a time, through the newest release of every minor in
// between; servers one at a time first, then agents; no kubelet newer than
// any API server; no downgrade; the target must be in the catalog and
// supported at the date; a cluster whose version skew is already illegal is
// refused, naming the nodes.
func Make(req Request) (Plan, error) {
	c := req.Catalog
	if c == nil {
		return Plan{}, fmt.Errorf("upgrade: no catalog")
	}
	nodes, err := readNodes(req)
	if err != nil {
		return Plan{}, err
	}
	if len(nodes) > 0 {
		if r := checkSkew(nodes); r != nil {
			return Plan{}, r
		}
	}
	to, err := target(c, req.To)
	if err != nil {
		return Plan{}, err
	}
	// With no --to, a cluster already past the stable channel finishes at the
	// newest version it runs instead of being refused as a downgrade.
	if req.To == "" {
		for _, v := range runningVersions(nodes, req.From) {
			if to.Less(v) && c.Contains(v) {
				to = v
			}
		}
	}
	toMinor, _ := c.Lookup(to.Minor())
	if !toMinor.SupportedAt(req.At) {
		var ok []string
		for _, m := range c.Window(req.At) {
			ok = append(ok, m.Minor)
		}
		why := "end of life " + toMinor.EOL.String()
		switch {
		case !toMinor.KnownDates():
			why = "its support window is unknown to rack"
		case req.At.Before(toMinor.Released):
			why = "released " + toMinor.Released.String()
		}
		return Plan{}, refuse(nil, fmt.Sprintf("pick a minor supported at %s: %s (rack versions --at %s)", req.At, orNone(ok), req.At),
			"k3s %s is not supported at %s (%s)", to.Minor(), req.At, why)
	}

	var from inventory.K3sVersion
	if len(nodes) == 0 {
		from, err = inventory.ParseK3sVersion(req.From)
		if err != nil {
			return Plan{}, refuse(nil, "pass --from as an exact k3s version, e.g. --from v1.33.5+k3s1", "--from: %v", err)
		}
		if to.Less(from) {
			return Plan{}, refuse(nil, "pick a target at or after "+from.String(), "k3s %s → %s is a downgrade, which rack never does", from, to)
		}
	} else {
		var newer []string
		from = nodes[0].version
		for _, n := range nodes {
			if to.Less(n.version) {
				newer = append(newer, n.name+" "+n.version.String())
			}
			if n.version.Less(from) {
				from = n.version
			}
		}
		if len(newer) > 0 {
			return Plan{}, refuse(newer, "pick a target at or after the newest node's version (rack upgrade plan --to …)",
				"k3s %s would downgrade nodes that run a newer version, which rack never does", to)
		}
	}

	path, err := pathOf(c, from, to)
	if err != nil {
		return Plan{}, err
	}
	plan := Plan{From: from.String(), To: to.String(), Steps: []Step{}}
	entered := from.MinorVersion()
	for _, v := range path {
		step := Step{Version: v.String(), Nodes: []string{}}
		if m := v.MinorVersion(); m.Compare(entered) > 0 {
			entered = m
			if cm, ok := c.Lookup(m.String()); ok {
				step.RemovedAPIs = slices.Clone(cm.RemovedAPIs)
			}
		}
		// Servers one at a time, then agents; the skew is checked after
		// every single node, as the executor will move them.
		for _, servers := range []bool{true, false} {
			for i := range nodes {
				n := &nodes[i]
				if n.server != servers || !n.version.Less(v) {
					continue
				}
				n.version = v
				if r := checkSkew(nodes); r != nil {
					return Plan{}, fmt.Errorf("upgrade: planning error, moving %s to %s breaks the version skew (%v): report this as a rack bug", n.name, v, r)
				}
				step.Nodes = append(step.Nodes, n.name)
				if servers {
					step.Servers++
				}
			}
		}
		if len(nodes) == 0 || len(step.Nodes) > 0 {
			plan.Steps = append(plan.Steps, step)
		}
	}
	return plan, nil
}

// runningVersions are the versions the cluster runs (or --from).
func runningVersions(nodes []node, from string) []inventory.K3sVersion {
	var out []inventory.K3sVersion
	for _, n := range nodes {
		out = append(out, n.version)
	}
	if v, err := inventory.ParseK3sVersion(from); err == nil {
		out = append(out, v)
	}
	return out
}

func readNodes(req Request) ([]node, error) {
	if len(req.Nodes) == 0 {
		if req.From == "" {
			return nil, refuse(nil, "read the cluster (leave --from out, after rack up) or plan offline with --from VERSION", "no nodes to plan for")
		}
		return nil, nil
	}
	if req.From != "" {
		return nil, fmt.Errorf("upgrade: give the cluster's nodes or --from, not both")
	}
	var out []node
	var bad, roles []string
	servers := 0
	for _, n := range req.Nodes {
		v, err := inventory.ParseK3sVersion(n.Version)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s %q", n.Name, n.Version))
			continue
		}
		switch n.Role {
		case inventory.RoleServer:
			servers++
		case inventory.RoleAgent:
		default:
			roles = append(roles, fmt.Sprintf("%s %q", n.Name, n.Role))
		}
		out = append(out, node{name: n.Name, server: n.Role == inventory.RoleServer, version: v})
	}
	if len(bad) > 0 {
		return nil, refuse(bad, "reinstall those nodes with a k3s release (rack node remove, then rack node add)", "nodes run versions that are not k3s releases")
	}
	if len(roles) > 0 {
		return nil, refuse(roles, "give each node the role server or agent", "nodes with an unknown role")
	}
	if servers == 0 {
		return nil, refuse(nil, "check that the kubeconfig points at this cluster", "no server among the cluster's nodes")
	}
	return out, nil
}

// target resolves --to: "" is the stable channel, a minor its newest release,
// an exact version must be in the catalog.
func target(c *catalog.Catalog, to string) (inventory.K3sVersion, error) {
	const fix = "rack versions lists the releases rack knows; rack versions --refresh fetches new ones"
	switch {
	case to == "":
		if c.Channels.Stable.IsZero() {
			return inventory.K3sVersion{}, refuse(nil, "pass --to VERSION or --to MINOR", "the catalog names no stable channel")
		}
		return c.Channels.Stable, nil
	case inventory.IsK3sMinor(to):
		v, ok := c.NewestPatch(to)
		if !ok {
			return inventory.K3sVersion{}, refuse(nil, fix, "k3s %s has no release in the catalog", to)
		}
		return v, nil
	}
	v, err := inventory.ParseK3sVersion(to)
	if err != nil {
		return inventory.K3sVersion{}, refuse(nil, "write it as v1.34.2+k3s1 (a release) or v1.34 (its newest release)", "--to %q is not a k3s version", to)
	}
	if !c.Contains(v) {
		return inventory.K3sVersion{}, refuse(nil, fix, "k3s %s is not in the catalog", v)
	}
	return v, nil
}

// pathOf is the versions from → to goes through: the newest release of every
// minor strictly between them, then to.
func pathOf(c *catalog.Catalog, from, to inventory.K3sVersion) ([]inventory.K3sVersion, error) {
	if !from.Less(to) {
		return nil, nil
	}
	var path []inventory.K3sVersion
	for m := from.MinorVersion().Next(); m.Compare(to.MinorVersion()) < 0; m = m.Next() {
		v, ok := c.NewestPatch(m.String())
		if !ok {
			return nil, refuse(nil, "run rack versions --refresh, or pass --catalog FILE with that minor",
				"the path %s → %s goes through k3s %s, which has no release in the catalog", from, to, m)
		}
		path = append(path, v)
	}
	return append(path, to), nil
}

// maxKubeletLag is how many minors a kubelet may trail the API server:
// three since Kubernetes 1.28, two before.
func maxKubeletLag(server inventory.K3sMinor) int {
	if server.Compare(inventory.K3sMinor{Major: 1, Minor: 28}) >= 0 {
		return 3
	}
	return 2
}

// checkSkew applies the Kubernetes version skew policy to the nodes as they
// run: API servers (k3s servers) at most one minor apart; no kubelet newer
// than the oldest API server; none more than maxKubeletLag minors behind the
// newest. Minors, not patches, are what the policy speaks of.
func checkSkew(nodes []node) *Refusal {
	var oldest, newest inventory.K3sMinor
	first := true
	for _, n := range nodes {
		if !n.server {
			continue
		}
		m := n.version.MinorVersion()
		if first || m.Compare(oldest) < 0 {
			oldest = m
		}
		if first || m.Compare(newest) > 0 {
			newest = m
		}
		first = false
	}
	if first {
		return refuse(nil, "add a server", "no server left")
	}
	if inventory.MinorDistance(oldest, newest) > 1 {
		var behind []string
		for _, n := range nodes {
			if n.server && inventory.MinorDistance(n.version.MinorVersion(), newest) > 1 {
				behind = append(behind, n.name+" "+n.version.String())
			}
		}
		return refuse(behind, fmt.Sprintf("upgrade those servers by hand, one minor at a time, to k3s %s, then plan again", newest),
			"the servers are more than one minor apart (newest %s), which Kubernetes does not support", newest)
	}
	var ahead, behind []string
	lag := maxKubeletLag(newest)
	for _, n := range nodes {
		if n.server {
			continue
		}
		m := n.version.MinorVersion()
		switch {
		case m.Compare(oldest) > 0:
			ahead = append(ahead, n.name+" "+n.version.String())
		case inventory.MinorDistance(m, newest) > lag:
			behind = append(behind, n.name+" "+n.version.String())
		}
	}
	if len(ahead) > 0 {
		return refuse(ahead, fmt.Sprintf("reinstall those agents at k3s %s or older, or bring every server to their minor first", oldest),
			"agents run a kubelet newer than the oldest server (%s), which Kubernetes does not support", oldest)
	}
	if len(behind) > 0 {
		return refuse(behind, fmt.Sprintf("upgrade those agents by hand to within %d minors of %s, or remove and re-add them (rack node remove, rack node add)", lag, newest),
			"agents are more than %d minors behind the newest server (%s)", lag, newest)
	}
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// WriteText prints the plan for people.
func (p Plan) WriteText(w io.Writer, at catalog.Date) error {
	if len(p.Steps) == 0 {
		_, err := fmt.Fprintf(w, "k3s %s: nothing to upgrade (target %s)\n", p.From, p.To)
		return err
	}
	fmt.Fprintf(w, "k3s %s → %s, %d step(s), one minor at a time (support window at %s)\n", p.From, p.To, len(p.Steps), at)
	for i, s := range p.Steps {
		who := "every node: servers one at a time, then agents"
		if len(s.Nodes) > 0 {
			var parts []string
			if s.Servers > 0 {
				parts = append(parts, "servers one at a time: "+strings.Join(s.Nodes[:s.Servers], ", "))
			}
			if s.Servers < len(s.Nodes) {
				parts = append(parts, "then agents: "+strings.Join(s.Nodes[s.Servers:], ", "))
			}
			who = strings.Join(parts, "; ")
		}
		fmt.Fprintf(w, "%2d. %s  %s\n", i+1, s.Version, who)
		minor := s.Version
		if v, err := inventory.ParseK3sVersion(s.Version); err == nil {
			minor = v.Minor()
		}
		for _, r := range s.RemovedAPIs {
			to := "no replacement"
			if r.Replacement != "" {
				to = "use " + r.Replacement
			}
			fmt.Fprintf(w, "      %s no longer serves %s %s (%s)\n", minor, r.GroupVersion(), r.Kind, to)
		}
	}
	return nil
}
