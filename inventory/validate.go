package inventory

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// K3sComponents are the packaged components k3s can --disable.
var K3sComponents = []string{"coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes"}

var (
	fingerprint = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)
)

// IsK3sVersion reports whether v is an exact k3s version (v1.33.5+k3s1) or a minor (v1.33).
func IsK3sVersion(v string) bool { return IsK3sRelease(v) || IsK3sMinor(v) }

// validate checks the defaulted inventory. It is a pure function of the
// inventory (plus the existence of the airgap folder) and reports every problem.
func validate(inv *Inventory, r *reporter) Problems {
	v := &validator{inv: inv, reporter: reporter{file: r.file, pos: r.pos}}
	v.cluster()
	v.ssh("ssh", inv.SSH)
	v.nodes()
	v.metallb()
	v.storage()
	v.argocd()
	v.charts()
	v.apps()
	return v.problems
}

type validator struct {
	reporter
	inv *Inventory
}

func (v *validator) cluster() {
	c := v.inv.Cluster
	switch {
	case c.Name == "":
		v.errorf("cluster.name", "is required: a short name for the cluster, like homelab (it names the kubeconfig context)")
	case len(validation.IsDNS1123Label(c.Name)) > 0:
		v.errorf("cluster.name", "%q must be lowercase letters, digits and '-' (it names the kubeconfig context and state folder)", c.Name)
	}
	switch ver := c.K3s.Version; {
	case ver == "":
		v.errorf("cluster.k3s.version", "is required: an exact k3s release like v1.33.5+k3s1, or a minor like v1.33")
	case !IsK3sVersion(ver):
		v.errorf("cluster.k3s.version", "%q is not a k3s version: write vX.Y.Z+k3sN (v1.33.5+k3s1) or a minor vX.Y (v1.33)%s", ver, versionHint(ver))
	}
	if c.K3s.Token != "" && !v.inv.fromEnv["cluster.k3s.token"] {
		v.warnf("cluster.k3s.token", "the k3s token is written in plain text in the inventory: use token: ${RACK_K3S_TOKEN}, or leave it out and rack generates one")
	}
	for i, comp := range c.K3s.Disable {
		if !slices.Contains(K3sComponents, comp) {
			v.errorf(fmt.Sprintf("cluster.k3s.disable[%d]", i), "%q is not a k3s component%s (known: %s)", comp, didYouMean(comp, K3sComponents), strings.Join(K3sComponents, ", "))
		}
	}
	for i, arg := range c.K3s.Args {
		if !strings.HasPrefix(arg, "--") {
			v.errorf(fmt.Sprintf("cluster.k3s.args[%d]", i), "%q is not a k3s flag: write it as --flag=value", arg)
		}
		if strings.HasPrefix(arg, "--token") {
			v.errorf(fmt.Sprintf("cluster.k3s.args[%d]", i), "pass the token through cluster.k3s.token, never as a flag")
		}
	}
	if dir := c.K3s.Airgap; dir != "" {
		full := dir
		if !filepath.IsAbs(full) {
			full = filepath.Join(v.inv.Dir(), dir)
		}
		if st, err := os.Stat(full); err != nil || !st.IsDir() {
			v.errorf("cluster.k3s.airgap", "%s is not a folder: it must hold the k3s binaries and image tarballs per arch (relative paths start at the inventory's folder)", full)
		}
	}
	if ep := c.APIEndpoint; ep != "" && !isHost(ep) {
		v.errorf("cluster.apiEndpoint", "%q is neither an IP address nor a host name", ep)
	}
}

func versionHint(ver string) string {
	if !strings.HasPrefix(ver, "v") && IsK3sVersion("v"+ver) {
		return fmt.Sprintf(" (did you mean v%s?)", ver)
	}
	if exactish := regexp.MustCompile(`^v?\d+\.\d+\.\d+$`); exactish.MatchString(ver) {
		return fmt.Sprintf(" (did you mean %s+k3s1?)", "v"+strings.TrimPrefix(ver, "v"))
	}
	return ""
}

// ssh checks the settings written at path. Nodes hold the merged settings, so
// only keys the node itself sets are checked there; inherited ones are reported
// once, at the top-level ssh block.
func (v *validator) ssh(path string, s SSH) {
	written := func(key string) bool { _, ok := v.pos[path+"."+key]; return ok }
	if written("port") && (s.Port < 1 || s.Port > 65535) {
		v.errorf(path+".port", "%d is not a TCP port (1-65535)", s.Port)
	}
	if written("hostKeyPolicy") && !slices.Contains(HostKeyPolicies, s.HostKeyPolicy) {
		v.errorf(path+".hostKeyPolicy", "%q is not a host key policy: use strict or accept-new%s", s.HostKeyPolicy, didYouMean(s.HostKeyPolicy, HostKeyPolicies))
	}
	if written("bastion") && s.Bastion != "" {
		if _, err := ParseJump(s.Bastion); err != nil {
			v.errorf(path+".bastion", "%v", err)
		}
	}
}

func (v *validator) nodes() {
	inv := v.inv
	if len(inv.Nodes) == 0 {
		v.errorf("nodes", "no nodes: list at least one machine with name, address and role")
		return
	}
	names := map[string]string{}
	addrs := map[string]string{}
	servers := 0
	for i, n := range inv.Nodes {
		p := fmt.Sprintf("nodes[%d]", i)
		v.uniqueName(p+".name", n.Name, names, len(validation.IsDNS1123Subdomain(n.Name)) == 0,
			"the node's name in the cluster, like pinemaster",
			fmt.Sprintf("%q is not a valid Kubernetes node name: use lowercase letters, digits, '-' and '.'", n.Name),
			"node names must be unique")
		switch {
		case n.Address == "":
			v.errorf(p+".address", "is required: the IP address or host name rack reaches %s at over SSH", orNode(n.Name))
		case !isHost(n.Address):
			v.errorf(p+".address", "%q is neither an IP address nor a host name", n.Address)
		default:
			key := canonicalAddr(n.Address)
			if prev, dup := addrs[key]; dup {
				v.errorf(p+".address", "duplicate address %s (also %s): every node needs its own address", n.Address, prev)
			} else {
				addrs[key] = p
			}
			if ip, err := netip.ParseAddr(n.Address); err == nil {
				for _, cn := range inv.ClusterNetworks() {
					if cn.Range.Contains(ip) {
						v.errorf(p+".address", "%s is inside the cluster's %s %s: k3s would route it into the cluster; move the node or set another range in cluster.k3s.args", n.Address, cn.Name, cn.Range.Text)
					}
				}
			}
		}
		switch {
		case n.Role == "":
			v.errorf(p+".role", "is required: server or agent")
		case !slices.Contains(Roles, n.Role):
			v.errorf(p+".role", "unknown role %q: use server or agent%s", n.Role, didYouMean(n.Role, Roles))
		case n.IsServer():
			servers++
		}
		if n.Arch != "" && !slices.Contains(Arches, n.Arch) {
			v.errorf(p+".arch", "unknown arch %q: use arm64, amd64 or arm, or leave it out to detect it%s", n.Arch, didYouMean(n.Arch, Arches))
		}
		if n.HostKey != "" && !fingerprint.MatchString(n.HostKey) {
			v.errorf(p+".hostKey", "%q is not a SHA256 host key fingerprint: copy it from `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the node (SHA256:...)", n.HostKey)
		}
		for k, val := range n.Labels {
			lp := p + ".labels." + k
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				v.errorf(lp, "%q is not a valid label key: %s", k, errs[0])
			}
			if errs := validation.IsValidLabelValue(val); len(errs) > 0 {
				v.errorf(lp, "%q is not a valid label value: %s", val, errs[0])
			}
		}
		for j, t := range n.Taints {
			if _, err := ParseTaint(t); err != nil {
				v.errorf(fmt.Sprintf("%s.taints[%d]", p, j), "%v", err)
			}
		}
		v.ssh(p+".ssh", n.SSH)
	}
	if servers == 0 && !v.hasRoleErrors() {
		v.errorf("nodes", "no server: give at least one node role: server (it runs the control plane)")
	}
	if servers > 1 && servers%2 == 0 {
		v.warnf("nodes", "%d servers with embedded etcd: an even number tolerates no more failures than %d; use %d or %d servers", servers, servers-1, servers-1, servers+1)
	}
}

func (v *validator) hasRoleErrors() bool {
	for _, p := range v.problems {
		if strings.HasSuffix(p.Path, ".role") {
			return true
		}
	}
	return false
}

func orNode(name string) string {
	if name == "" {
		return "the node"
	}
	return name
}

func (v *validator) metallb() {
	m := v.inv.Addons.MetalLB
	if m == nil {
		return
	}
	if len(m.Pools) == 0 {
		v.errorf("addons.metallb.pools", "MetalLB needs at least one address pool: pools: [{name: production, addresses: [192.168.1.210-192.168.1.250]}]")
	}
	type owned struct {
		r    Range
		path string
	}
	var ranges []owned
	poolNames := map[string]string{}
	for i, pool := range m.Pools {
		p := fmt.Sprintf("addons.metallb.pools[%d]", i)
		v.uniqueName(p+".name", pool.Name, poolNames, len(validation.IsDNS1123Subdomain(pool.Name)) == 0,
			"a name for the pool, like production",
			fmt.Sprintf("%q must be lowercase letters, digits, '-' and '.' (it names an IPAddressPool)", pool.Name),
			"rename one")
		if len(pool.Addresses) == 0 {
			v.errorf(p+".addresses", "is required: ranges like 192.168.1.210-192.168.1.250 or CIDRs like 192.168.1.240/28")
		}
		for j, a := range pool.Addresses {
			ap := fmt.Sprintf("%s.addresses[%d]", p, j)
			r, err := ParseRange(a)
			if err != nil {
				v.errorf(ap, "%v", err)
				continue
			}
			for _, o := range ranges {
				if r.Overlaps(o.r) {
					v.errorf(ap, "%s overlaps %s (%s): MetalLB would hand out the same address twice", a, o.r.Text, o.path)
				}
			}
			ranges = append(ranges, owned{r, ap})
			for k, n := range v.inv.Nodes {
				if ip, err := netip.ParseAddr(n.Address); err == nil && r.Contains(ip) {
					v.errorf(ap, "%s contains the address of node %s (%s, nodes[%d]): take node addresses out of the pool", a, n.Name, n.Address, k)
				}
			}
			if ip, err := netip.ParseAddr(v.inv.Cluster.APIEndpoint); err == nil && r.Contains(ip) && !v.isNodeAddr(ip) {
				v.errorf(ap, "%s contains the apiEndpoint %s: take it out of the pool", a, ip)
			}
			for _, cn := range v.inv.ClusterNetworks() {
				if r.Overlaps(cn.Range) {
					v.errorf(ap, "%s overlaps the cluster's %s %s: Services and pods use those addresses inside the cluster; pick LAN addresses outside it", a, cn.Name, cn.Range.Text)
				}
			}
		}
		switch pool.Mode {
		case ModeL2:
			if len(pool.Peers) > 0 || pool.MyASN != 0 {
				v.errorf(p+".mode", "peers and myASN only apply to mode: bgp")
			}
		case ModeBGP:
			if pool.MyASN == 0 {
				v.errorf(p+".myASN", "is required in bgp mode: the AS number MetalLB speaks as, like 64513")
			}
			if len(pool.Peers) == 0 {
				v.errorf(p+".peers", "bgp mode needs at least one peer: peers: [{address: 192.168.1.1, asn: 64512}]")
			}
			for j, peer := range pool.Peers {
				pp := fmt.Sprintf("%s.peers[%d]", p, j)
				if _, err := netip.ParseAddr(peer.Address); err != nil {
					v.errorf(pp+".address", "%q is not an IP address: the router's address", peer.Address)
				}
				if peer.ASN == 0 {
					v.errorf(pp+".asn", "is required: the router's AS number, like 64512")
				}
			}
		default:
			v.errorf(p+".mode", "unknown mode %q: use l2 or bgp%s", pool.Mode, didYouMean(pool.Mode, PoolModes))
		}
	}
}

func (v *validator) isNodeAddr(ip netip.Addr) bool {
	for _, n := range v.inv.Nodes {
		if a, err := netip.ParseAddr(n.Address); err == nil && a == ip {
			return true
		}
	}
	return false
}

func (v *validator) storage() {
	inv := v.inv
	offering := 0
	for i, n := range inv.Nodes {
		if n.Storage == nil {
			continue
		}
		p := fmt.Sprintf("nodes[%d].storage", i)
		if n.Storage.Longhorn != "" {
			offering++
			if !filepath.IsAbs(n.Storage.Longhorn) {
				v.errorf(p+".longhorn", "%q must be an absolute path on the node, like /var/lib/longhorn", n.Storage.Longhorn)
			}
		}
		for j, vol := range n.Storage.Local {
			v.localVolume(fmt.Sprintf("%s.local[%d]", p, j), NodeLocalVolume{Node: n.Name, Name: vol.Name, Path: vol.Path, Capacity: vol.Capacity}, false)
		}
	}
	if lp := inv.Addons.LocalPV; lp != nil {
		if len(validation.IsDNS1123Subdomain(lp.StorageClass)) > 0 {
			v.errorf("addons.localPV.storageClass", "%q is not a valid StorageClass name", lp.StorageClass)
		}
		for j, vol := range lp.Volumes {
			v.localVolume(fmt.Sprintf("addons.localPV.volumes[%d]", j), vol, true)
		}
	}
	// PersistentVolume names are cluster-wide.
	seen := map[string]bool{}
	for _, vol := range inv.LocalVolumes() {
		if vol.Name != "" && seen[vol.Name] {
			v.errorf(v.localVolumePath(vol.Name), "duplicate local volume name %q: PersistentVolume names are cluster-wide", vol.Name)
		}
		seen[vol.Name] = true
	}
	if len(inv.LocalVolumes()) > 0 && inv.Addons.LocalPV == nil {
		v.warnf("addons", "nodes offer local volumes but addons.localPV is not set, so no PersistentVolumes are created: add addons: {localPV: {storageClass: local-storage}}")
	}
	if l := inv.Addons.Longhorn; l != nil {
		switch {
		case offering == 0:
			v.errorf("addons.longhorn", "no node offers Longhorn storage: add storage: {longhorn: /var/lib/longhorn} to at least one node")
		case l.Replicas < 0:
			v.errorf("addons.longhorn.replicas", "%d replicas: must be at least 1", l.Replicas)
		case l.Replicas > offering:
			v.errorf("addons.longhorn.replicas", "%d replicas but only %d node(s) offer Longhorn storage: lower replicas or add storage.longhorn to more nodes", l.Replicas, offering)
		}
	}
}

// localVolumePath finds the path of the last local volume named name, for duplicate reports.
func (v *validator) localVolumePath(name string) string {
	last := ""
	for i, n := range v.inv.Nodes {
		if n.Storage != nil {
			for j, vol := range n.Storage.Local {
				if vol.Name == name {
					last = fmt.Sprintf("nodes[%d].storage.local[%d].name", i, j)
				}
			}
		}
	}
	if lp := v.inv.Addons.LocalPV; lp != nil {
		for j, vol := range lp.Volumes {
			if vol.Name == name {
				last = fmt.Sprintf("addons.localPV.volumes[%d].name", j)
			}
		}
	}
	return last
}

func (v *validator) localVolume(p string, vol NodeLocalVolume, needsNode bool) {
	if needsNode {
		names := make([]string, 0, len(v.inv.Nodes))
		for _, n := range v.inv.Nodes {
			names = append(names, n.Name)
		}
		switch {
		case vol.Node == "":
			v.errorf(p+".node", "is required: the node that holds this folder")
		case !slices.Contains(names, vol.Node):
			v.errorf(p+".node", "no node named %q in nodes%s", vol.Node, didYouMean(vol.Node, names))
		}
	}
	switch {
	case vol.Name == "":
		v.errorf(p+".name", "is required: the PersistentVolume's name, like storage-pv")
	case len(validation.IsDNS1123Subdomain(vol.Name)) > 0:
		v.errorf(p+".name", "%q is not a valid PersistentVolume name: lowercase letters, digits, '-' and '.'", vol.Name)
	}
	if !filepath.IsAbs(vol.Path) {
		v.errorf(p+".path", "%q must be an absolute path on the node, like /storage", vol.Path)
	}
	if vol.Capacity == "" {
		v.errorf(p+".capacity", "is required: a Kubernetes quantity like 60Gi")
	} else if q, err := resource.ParseQuantity(vol.Capacity); err != nil {
		v.errorf(p+".capacity", "%q is not a Kubernetes quantity: write it like 60Gi or 500Mi", vol.Capacity)
	} else if q.Sign() <= 0 {
		v.errorf(p+".capacity", "%q must be more than zero", vol.Capacity)
	}
}

func (v *validator) argocd() {
	a := v.inv.Addons.ArgoCD
	if a == nil {
		return
	}
	if a.Repo == "" {
		v.errorf("addons.argocd.repo", "is required: the Git repository ArgoCD syncs from, like https://github.com/you/homelab-gitops")
	} else if !strings.Contains(a.Repo, "://") && !strings.HasPrefix(a.Repo, "git@") {
		v.errorf("addons.argocd.repo", "%q is not a Git URL: use https://… or git@host:owner/repo", a.Repo)
	}
	if filepath.IsAbs(a.Path) || strings.HasPrefix(filepath.Clean(a.Path), "..") {
		v.errorf("addons.argocd.path", "%q must be a folder inside the repository, like apps", a.Path)
	}
}

// charts: the chart mirror is a folder (its content is checked before
// rack up installs anything); an addon's chart is a local chart or an
// oci:// reference (Helm repositories are the pinned default).
func (v *validator) charts() {
	a := v.inv.Addons
	if m := a.ChartMirror; strings.Contains(m, "://") {
		v.errorf("addons.chartMirror", "%q: the chart mirror is a local folder of <chart>-<version>.tgz (as `helm pull` makes them); for an oci:// registry set addons.<name>.chart", m)
	}
	for key, chart := range map[string]string{
		"addons.metallb.chart":  chartOf(a.MetalLB != nil, func() string { return a.MetalLB.Chart }),
		"addons.longhorn.chart": chartOf(a.Longhorn != nil, func() string { return a.Longhorn.Chart }),
		"addons.argocd.chart":   chartOf(a.ArgoCD != nil, func() string { return a.ArgoCD.Chart }),
		"addons.traefik.chart":  chartOf(a.Traefik != nil, func() string { return a.Traefik.Chart }),
	} {
		if strings.Contains(chart, "://") && !strings.HasPrefix(chart, "oci://") {
			v.errorf(key, "%q: use a packaged chart (.tgz, as `helm pull` makes it), a chart folder, or an oci:// reference", chart)
		}
	}
}

func chartOf(on bool, chart func() string) string {
	if !on {
		return ""
	}
	return chart()
}

func isHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	return len(validation.IsDNS1123Subdomain(strings.ToLower(s))) == 0
}

func canonicalAddr(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return strings.ToLower(s)
}

// uniqueName checks a name that must be given (required says what it is),
// well formed (valid; else invalid says why) and not used before: seen maps
// each name to the list entry that used it first; advice says what to do
// about a duplicate.
func (v *validator) uniqueName(path, name string, seen map[string]string, valid bool, required, invalid, advice string) {
	switch {
	case name == "":
		v.errorf(path, "is required: %s", required)
	case !valid:
		v.errorf(path, "%s", invalid)
	default:
		if prev, dup := seen[name]; dup {
			v.errorf(path, "duplicate %s name %q (also %s): %s", kindOf(path), name, prev, advice)
			return
		}
		seen[name] = strings.TrimSuffix(path, ".name")
	}
}

// kindOf names what a path's list holds: nodes[1].name is a node,
// addons.metallb.pools[0].name a pool, apps[2].name an app.
func kindOf(path string) string {
	list := strings.TrimSuffix(path, ".name")
	if i := strings.LastIndexByte(list, '['); i >= 0 {
		list = list[:i]
	}
	if i := strings.LastIndexByte(list, '.'); i >= 0 {
		list = list[i+1:]
	}
	return strings.TrimSuffix(list, "s")
}
