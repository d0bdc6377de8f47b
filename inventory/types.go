// Package inventory is the one file a homelab user edits: its Go types, loading
// (with line numbers kept for every key), defaults and validation.
package inventory

// Inventory is the whole rack as the user described it, after defaults.
type Inventory struct {
	// File is the path the inventory was loaded from ("" when built in code).
	File    string  `yaml:"-"`
	Cluster Cluster `yaml:"cluster"`
	SSH     SSH     `yaml:"ssh"`
	Nodes   []Node  `yaml:"nodes"`
	Addons  Addons  `yaml:"addons"`
	Apps    []App   `yaml:"apps"`

	pos     positions       // key path -> line, for messages of later steps
	fromEnv map[string]bool // key paths whose value came from ${VAR} expansion
}

// Cluster holds cluster-wide settings.
type Cluster struct {
	Name string `yaml:"name"`
	K3s  K3s    `yaml:"k3s"`
	// APIEndpoint is the address nodes and kubeconfigs use for the API server.
	// Defaults to the first server's address.
	APIEndpoint string `yaml:"apiEndpoint"`
}

// K3s describes the k3s distribution installed on every node.
type K3s struct {
	// Version is an exact k3s version (v1.33.5+k3s1) or a minor (v1.33).
	Version string `yaml:"version"`
	// Token is the cluster join secret. Empty means rack generates one.
	Token   string   `yaml:"token"`
	Disable []string `yaml:"disable"`
	Args    []string `yaml:"args"`
	// Airgap is a folder with per-arch k3s binaries and image tarballs.
	Airgap string `yaml:"airgap"`
}

// SSH holds connection settings. The top-level block holds defaults; each node
// may override any field. After Load, Node.SSH is the effective (merged) value.
type SSH struct {
	User          string `yaml:"user"`
	Port          int    `yaml:"port"`
	IdentityFile  string `yaml:"identityFile"`
	KnownHosts    string `yaml:"knownHosts"`
	HostKeyPolicy string `yaml:"hostKeyPolicy"`
	// Sudo is a pointer so a node can say sudo: false over a true default.
	Sudo    *bool  `yaml:"sudo"`
	Bastion string `yaml:"bastion"`
}

// UseSudo reports whether privileged steps go through sudo.
func (s SSH) UseSudo() bool { return s.Sudo != nil && *s.Sudo }

// Host key policies.
const (
	HostKeyStrict    = "strict"
	HostKeyAcceptNew = "accept-new"
)

// Node roles.
const (
	RoleServer = "server"
	RoleAgent  = "agent"
)

// Node is one machine on the shelf.
type Node struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	Role    string `yaml:"role"`
	// Arch is optional; when set, a mismatch with the host is an error.
	Arch    string            `yaml:"arch"`
	HostKey string            `yaml:"hostKey"`
	Labels  map[string]string `yaml:"labels"`
	Taints  []string          `yaml:"taints"`
	Storage *Storage          `yaml:"storage"`
	SSH     SSH               `yaml:"ssh"`
}

// IsServer reports whether the node runs the k3s server (control plane).
func (n Node) IsServer() bool { return n.Role == RoleServer }

// OffersLonghorn reports whether the node offers Longhorn disk space.
func (n Node) OffersLonghorn() bool { return n.Storage != nil && n.Storage.Longhorn != "" }

// Storage is what a node offers to the cluster's storage addons.
type Storage struct {
	Longhorn string        `yaml:"longhorn"`
	Local    []LocalVolume `yaml:"local"`
}

// LocalVolume is a local PersistentVolume on one node.
type LocalVolume struct {
	Name     string `yaml:"name"`
	Path     string `yaml:"path"`
	Capacity string `yaml:"capacity"`
}

// Addons is the platform layered on top of k3s. A nil addon is not installed.
type Addons struct {
	// ChartMirror is a folder of <chart>-<version>.tgz (as `helm pull`
	// makes them) the charts are installed from instead of their
	// repositories, for airgapped racks; $RACK_CHART_MIRROR overrides it.
	// Relative to the inventory's folder.
	ChartMirror string    `yaml:"chartMirror"`
	MetalLB     *MetalLB  `yaml:"metallb"`
	Longhorn    *Longhorn `yaml:"longhorn"`
	LocalPV     *LocalPV  `yaml:"localPV"`
	ArgoCD      *ArgoCD   `yaml:"argocd"`
	Traefik     *Traefik  `yaml:"traefik"`
}

// Traefik is rack's own pinned Traefik ingress (k3s' bundled one is then
// disabled); apps with expose.host are routed through it.
type Traefik struct {
	Chart string `yaml:"chart"`
}

// MetalLB hands out LoadBalancer addresses from the user's LAN.
type MetalLB struct {
	Chart string   `yaml:"chart"`
	Pools []IPPool `yaml:"pools"`
}

// IPPool is one MetalLB IPAddressPool.
type IPPool struct {
	Name string `yaml:"name"`
	// Addresses are "a.b.c.d-e.f.g.h" ranges or CIDRs.
	Addresses []string  `yaml:"addresses"`
	Mode      string    `yaml:"mode"`
	Peers     []BGPPeer `yaml:"peers"`
	MyASN     uint32    `yaml:"myASN"`
}

// MetalLB pool modes.
const (
	ModeL2  = "l2"
	ModeBGP = "bgp"
)

// BGPPeer is a router MetalLB speaks BGP to.
type BGPPeer struct {
	Address string `yaml:"address"`
	ASN     uint32 `yaml:"asn"`
}

// Longhorn is replicated block storage over the nodes' disks.
type Longhorn struct {
	Chart string `yaml:"chart"`
	// Replicas defaults to min(3, nodes offering Longhorn storage).
	Replicas     int   `yaml:"replicas"`
	DefaultClass *bool `yaml:"defaultClass"`
}

// IsDefaultClass reports whether Longhorn's StorageClass is the cluster default.
func (l Longhorn) IsDefaultClass() bool { return l.DefaultClass == nil || *l.DefaultClass }

// LocalPV exposes node-local folders as PersistentVolumes.
type LocalPV struct {
	Chart        string `yaml:"chart"`
	StorageClass string `yaml:"storageClass"`
	// Volumes declares local volumes centrally, each naming its node; the
	// same as listing them under that node's storage.local.
	Volumes []NodeLocalVolume `yaml:"volumes"`
}

// NodeLocalVolume is a local volume together with the node that holds it.
type NodeLocalVolume struct {
	Node     string `yaml:"node"`
	Name     string `yaml:"name"`
	Path     string `yaml:"path"`
	Capacity string `yaml:"capacity"`
}

// LocalVolumes returns every local volume of the rack, from the nodes'
// storage.local lists and from addons.localPV.volumes, in inventory order.
func (inv *Inventory) LocalVolumes() []NodeLocalVolume {
	var out []NodeLocalVolume
	for _, n := range inv.Nodes {
		if n.Storage == nil {
			continue
		}
		for _, v := range n.Storage.Local {
			out = append(out, NodeLocalVolume{Node: n.Name, Name: v.Name, Path: v.Path, Capacity: v.Capacity})
		}
	}
	if inv.Addons.LocalPV != nil {
		out = append(out, inv.Addons.LocalPV.Volumes...)
	}
	return out
}

// ArgoCD delivers apps from a Git repository (app of apps).
type ArgoCD struct {
	Chart       string `yaml:"chart"`
	Repo        string `yaml:"repo"`
	Path        string `yaml:"path"`
	Revision    string `yaml:"revision"`
	DeliverApps bool   `yaml:"deliverApps"`
}

// App is a sample application and how its releases roll out.
type App struct {
	Name     string      `yaml:"name"`
	Image    string      `yaml:"image"`
	Port     int         `yaml:"port"`
	Replicas int         `yaml:"replicas"`
	Expose   *Expose     `yaml:"expose"`
	Storage  *AppStorage `yaml:"storage"`
	Strategy Strategy    `yaml:"strategy"`
	// Env is the container's environment (database host and the like), rendered sorted by name.
	Env map[string]string `yaml:"env"`
}

// Expose routes an app through Traefik by host name.
type Expose struct {
	Host string `yaml:"host"`
}

// AppStorage is a PersistentVolumeClaim for the app.
type AppStorage struct {
	Size  string `yaml:"size"`
	Class string `yaml:"class"`
	// Path is where the volume is mounted in the container (extension of SPEC).
	Path string `yaml:"path"`
}

// Strategy is how a new image version is released.
type Strategy struct {
	Type string `yaml:"type"`
	// Steps are canary traffic percentages, increasing, ending at 100.
	Steps []int `yaml:"steps"`
	// Check is an optional HTTP path that must answer 2xx before each step.
	Check string `yaml:"check"`
	// Match selects the requests an A/B candidate receives.
	Match *Match `yaml:"match"`
	// Mirror is the percent of requests a shadow candidate receives a copy of.
	Mirror int `yaml:"mirror"`
}

// Match selects requests by header or cookie.
type Match struct {
	Header string `yaml:"header"`
	Cookie string `yaml:"cookie"`
	Value  string `yaml:"value"`
}

// Strategy types.
const (
	StrategyRecreate  = "recreate"
	StrategyRolling   = "rolling"
	StrategyBlueGreen = "blue-green"
	StrategyCanary    = "canary"
	StrategyAB        = "ab"
	StrategyShadow    = "shadow"
)

// Known value sets, used by validation and for did-you-mean hints.
var (
	Roles           = []string{RoleServer, RoleAgent}
	Arches          = []string{"arm64", "amd64", "arm"}
	Strategies      = []string{StrategyRecreate, StrategyRolling, StrategyBlueGreen, StrategyCanary, StrategyAB, StrategyShadow}
	HostKeyPolicies = []string{HostKeyStrict, HostKeyAcceptNew}
	PoolModes       = []string{ModeL2, ModeBGP}
)

// Servers returns the server nodes in inventory order.
func (inv *Inventory) Servers() []Node {
	var out []Node
	for _, n := range inv.Nodes {
		if n.IsServer() {
			out = append(out, n)
		}
	}
	return out
}

// Node returns the named node.
func (inv *Inventory) Node(name string) (Node, bool) {
	for _, n := range inv.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}
