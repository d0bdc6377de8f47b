// Package noderuntime runs a real Kubernetes node on a test host: a
// containerd of its own (Debian's 1.6 with runc), a kubelet, kube-proxy in
// iptables mode and a pod network (the CNI bridge plugin on the node's pod
// CIDR, plus a route to every other node's pod CIDR via that node's address,
// which is what flannel's host-gw backend does).
//
// It runs INSIDE a test host's network, mount and UTS namespaces (called by
// the fake k3s there, or by cmd/racknode), and changes only that host's
// view: private tmpfs mounts for its run-time state, the host's own iptables
// and routes. The machine-wide things it touches are the cgroup v1 folders
// /sys/fs/cgroup/<controller>/rack-<host> (kubelet's cgroupRoot) and a record
// per node under /run/rack-noderuntime that lets Sweep clean up after a
// crash, plus the kernel sysctls every kubelet sets (see README notes in the
// report: vm.overcommit_memory, kernel.panic, kernel.panic_on_oops).
package noderuntime

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Config describes one node.
type Config struct {
	// NodeName is the Node's name; the kubelet's client certificate must be
	// for system:node:<NodeName>.
	NodeName string
	// NodeIP is the host's address on the test bridge: the Node's InternalIP
	// and where other nodes route this node's pod CIDR.
	NodeIP string
	// Interface carries NodeIP (default eth0).
	Interface string
	// APIServer is the URL the kubelet and kube-proxy use (the test control
	// plane, or a k3s server's :6443).
	APIServer string
	CAPEM     []byte
	// KubeletCertPEM/KubeletKeyPEM: CN system:node:<NodeName>, O system:nodes,
	// signed by the cluster CA, so the Node authorizer and NodeRestriction
	// apply as on k3s.
	KubeletCertPEM, KubeletKeyPEM []byte
	// ProxyCertPEM/ProxyKeyPEM: CN system:kube-proxy (bound to the
	// system:node-proxier role by the default RBAC policy).
	ProxyCertPEM, ProxyKeyPEM []byte

	// Labels and Taints ("key=value:Effect") are set at registration only,
	// as with k3s's --node-label and --node-taint.
	Labels map[string]string
	Taints []string

	ClusterCIDR   string // default 10.42.0.0/16
	ServiceCIDR   string // default 10.43.0.0/16
	ClusterDNS    string // default 10.43.0.10
	ClusterDomain string // default cluster.local
	// ServiceGateway is where the host routes ServiceCIDR (default: the
	// first address of NodeIP's subnet, the test rack's root namespace,
	// which blackholes it). A route other than blackhole is needed because a
	// local connect() to a blackholed address fails before kube-proxy's
	// OUTPUT DNAT rewrites it.
	ServiceGateway string

	// Binaries. Kubelet and KubeProxy are required; the others default to
	// Debian's (containerd, ctr, iptables-save/-restore, ip on PATH;
	// CNIBinDir /usr/lib/cni).
	Kubelet, KubeProxy string
	Containerd, Ctr    string
	CNIBinDir          string

	// DataDir keeps state across restarts of the node (containerd's root,
	// CNI configuration and IPAM, logs). Default /var/lib/rancher/k3s/agent,
	// as on k3s; on a test host that is a private tmpfs.
	DataDir string
	// RunDir holds containerd's state and socket; Start mounts a private
	// tmpfs there (default /run/k3s, as on k3s).
	RunDir string
	// KubeletRootDir is the kubelet's --root-dir (default /var/lib/kubelet);
	// Start mounts a private tmpfs there.
	KubeletRootDir string
	// CgroupRoot is the kubelet's cgroupRoot, created under every cgroup v1
	// controller. Default /rack-<hostname>: test hosts' names are unique on
	// the machine, node names are not (two labs may both have "server1").
	CgroupRoot string

	// Images are OCI layout tars imported into containerd's k8s.io
	// namespace at every start (a no-op when present). The pause image
	// (registry.k8s.io/pause:3.6) must be among them.
	Images []string

	// KubeletArgs and ProxyArgs are appended to the components' flags
	// (k3s's kubelet-arg and kube-proxy-arg).
	KubeletArgs, ProxyArgs []string

	// Logf receives progress notes; nil discards them.
	Logf func(format string, args ...any) `json:"-"`
}

// Defaults as on k3s.
const (
	DefaultClusterCIDR   = "10.42.0.0/16"
	DefaultServiceCIDR   = "10.43.0.0/16"
	DefaultClusterDNS    = "10.43.0.10"
	DefaultClusterDomain = "cluster.local"
	DefaultDataDir       = "/var/lib/rancher/k3s/agent"
	DefaultRunDir        = "/run/k3s"
	DefaultKubeletRoot   = "/var/lib/kubelet"
	DefaultCNIBinDir     = "/usr/lib/cni"
	// PauseImage is containerd 1.6's default sandbox image.
	PauseImage = "registry.k8s.io/pause:3.6"
	// CgroupPrefix starts every cgroup this package creates.
	CgroupPrefix = "rack-"
)

// RealKubeletLabel is set on every Node a real kubelet registers, so kwok
// can be told to leave those nodes alone:
// --manage-nodes-with-label-selector='!testrack.homelab/kubelet'.
const RealKubeletLabel = "testrack.homelab/kubelet"

func (c *Config) setDefaults() error {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.Interface, "eth0")
	def(&c.ClusterCIDR, DefaultClusterCIDR)
	def(&c.ServiceCIDR, DefaultServiceCIDR)
	def(&c.ClusterDNS, DefaultClusterDNS)
	def(&c.ClusterDomain, DefaultClusterDomain)
	def(&c.DataDir, DefaultDataDir)
	def(&c.RunDir, DefaultRunDir)
	def(&c.KubeletRootDir, DefaultKubeletRoot)
	def(&c.CNIBinDir, DefaultCNIBinDir)
	def(&c.Containerd, "containerd")
	def(&c.Ctr, "ctr")
	if c.CgroupRoot == "" {
		host, err := os.Hostname()
		if err != nil {
			return err
		}
		c.CgroupRoot = "/" + CgroupPrefix + host
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	var errs []error
	for _, r := range []struct{ name, v string }{
		{"NodeName", c.NodeName}, {"NodeIP", c.NodeIP}, {"APIServer", c.APIServer},
		{"Kubelet", c.Kubelet}, {"KubeProxy", c.KubeProxy},
	} {
		if r.v == "" {
			errs = append(errs, fmt.Errorf("%s is required", r.name))
		}
	}
	for _, r := range []struct {
		name string
		v    []byte
	}{
		{"CAPEM", c.CAPEM}, {"KubeletCertPEM", c.KubeletCertPEM}, {"KubeletKeyPEM", c.KubeletKeyPEM},
		{"ProxyCertPEM", c.ProxyCertPEM}, {"ProxyKeyPEM", c.ProxyKeyPEM},
	} {
		if len(r.v) == 0 {
			errs = append(errs, fmt.Errorf("%s is required", r.name))
		}
	}
	if c.NodeIP != "" && net.ParseIP(c.NodeIP).To4() == nil {
		errs = append(errs, fmt.Errorf("NodeIP %q is not an IPv4 address", c.NodeIP))
	}
	if c.ServiceGateway == "" && c.NodeIP != "" {
		gw, err := firstAddr(c.Interface, c.NodeIP)
		if err != nil {
			errs = append(errs, err)
		}
		c.ServiceGateway = gw
	}
	if !strings.HasPrefix(c.CgroupRoot, "/"+CgroupPrefix) || strings.Count(c.CgroupRoot, "/") != 1 {
		errs = append(errs, fmt.Errorf("CgroupRoot %q must be /%s<name>, one level deep", c.CgroupRoot, CgroupPrefix))
	}
	return errors.Join(errs...)
}

// firstAddr is the first host address of the subnet ip has on iface: the
// test rack's root namespace (198.18.0.1 on 198.18.0.0/16).
func firstAddr(iface, ip string) (string, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return "", fmt.Errorf("interface %s: %w", iface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.Equal(net.ParseIP(ip)) {
			continue
		}
		first := n.IP.Mask(n.Mask).To4()
		first[3]++
		return first.String(), nil
	}
	return "", fmt.Errorf("%s is not an address of %s", ip, iface)
}

// paths of the node's files.
func (c *Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.DataDir}, elem...)...)
}
func (c *Config) socket() string     { return filepath.Join(c.RunDir, "containerd", "containerd.sock") }
func (c *Config) cniConfDir() string { return c.path("etc", "cni", "net.d") }
func (c *Config) logDir() string     { return c.path("logs") }

// LogPath is where a component's output goes: "containerd", "kubelet",
// "kube-proxy".
func (c *Config) LogPath(component string) string {
	return filepath.Join(c.logDir(), component+".log")
}

// nodeLabels renders --node-labels, with RealKubeletLabel added.
func (c *Config) nodeLabels() string {
	m := map[string]string{RealKubeletLabel: "real"}
	for k, v := range c.Labels {
		m[k] = v
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}
