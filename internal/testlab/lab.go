// Package testlab assembles a whole test rack for end-to-end tests, the
// benchmarks and `make demo`: real OpenSSH hosts (internal/testrack), a real
// control plane (internal/testcluster), the fake k3s and init shim on every
// host (internal/fakek3s), and an inventory that points rack at them. rack
// itself is then run unchanged against it.
package testlab

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/homelab/rack/internal/fakek3s"
	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/images"
	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testnet"
	"github.com/homelab/rack/internal/testrack"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s"
)

// Node is one machine of the lab and how the inventory describes it.
type Node struct {
	Name     string
	Role     string // server | agent
	Pi       bool   // looks like a Raspberry Pi (arm64, device tree, cmdline.txt)
	Arch     string // written to the inventory when set
	Longhorn bool   // offers Longhorn storage at /var/lib/longhorn (or LonghornPath)
	// LonghornPath overrides Longhorn's folder (any string: it is quoted).
	LonghornPath string
	LocalPV      string // a local volume folder, e.g. /storage (any string: it is quoted)
	Labels       map[string]string
	// Real runs a real kubelet, containerd and kube-proxy on the host
	// (internal/noderuntime): pods really run there. Others are kwok's.
	Real bool
}

// Spec is the lab to build.
type Spec struct {
	Cluster string // default "lab"
	Version string // k3s version, default fakek3s.DefaultVersion
	Nodes   []Node
	// User logs in over SSH: testrack.SudoUser (default, sudo without a
	// password), testrack.PasswordSudoUser or testrack.RootUser.
	User string
	// Token, when set, goes into the inventory as ${RACK_K3S_TOKEN}; the
	// caller sets that variable. Empty: rack generates one.
	TokenFromEnv bool
	// Extra is YAML appended to the inventory (addons:, apps:).
	Extra string
	// Dir holds the lab's files (inventory, keys, airgap folder,
	// kubeconfig); default a temp dir.
	Dir string
	// Spare reserves addresses on the test network no host holds
	// (Rack.Spare), for a MetalLB address pool.
	Spare int
	// Persistent labs outlive the process that made them (make demo).
	Persistent bool
	Logf       func(string, ...any)
}

// Lab is a running test rack and the inventory for it.
type Lab struct {
	Spec Spec
	Rack *testrack.Rack
	// CP holds the cluster's CA, admin credentials and service account
	// keys, which the fake k3s servers share (as k3s' datastore does).
	CP        *cpfile.ControlPlane
	Dir       string
	Inventory string // path of the inventory file
	Airgap    string // folder with the fake k3s per arch
	// Kubeconfig is where rack merges the cluster's context (KUBECONFIG).
	Kubeconfig string
	// Images are the images real nodes import (when the lab has any).
	Images  images.Set
	hosts   map[string]*testrack.Host
	unroute func() error
	kwok    *testcluster.Kwok
}

// New starts a lab for a test; everything stops when the test ends.
func New(t testing.TB, spec Spec) *Lab {
	t.Helper()
	if err := testrack.Supported(); err != nil {
		testenv.SkipOrFail(t, "test lab needs root and OpenSSH: %v", err)
	}
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	if spec.Logf == nil {
		spec.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lab, err := Start(ctx, spec)
	if lab != nil {
		t.Cleanup(func() { _ = lab.Close() })
	}
	if err != nil {
		t.Fatalf("test lab: %v", err)
	}
	return lab
}

// Start builds the lab: hosts, control plane, stand-ins, inventory.
func Start(ctx context.Context, spec Spec) (lab *Lab, err error) {
	if spec.Cluster == "" {
		spec.Cluster = "lab"
	}
	if spec.Version == "" {
		spec.Version = fakek3s.DefaultVersion
	}
	if spec.User == "" {
		spec.User = testrack.SudoUser
	}
	if spec.Logf == nil {
		spec.Logf = func(string, ...any) {}
	}
	if spec.Dir == "" {
		return nil, errors.New("testlab: Spec.Dir is required outside tests")
	}
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return nil, err
	}
	var pis []int
	for i, n := range spec.Nodes {
		if n.Pi {
			pis = append(pis, i)
		}
	}
	rack, err := testrack.Start(ctx, testrack.Options{Hosts: len(spec.Nodes), Spare: spec.Spare, Pi: pis, Persistent: spec.Persistent, Logf: spec.Logf})
	if err != nil {
		return nil, err
	}
	lab = &Lab{Spec: spec, Rack: rack, Dir: spec.Dir, hosts: map[string]*testrack.Host{}}
	defer func() {
		if err != nil {
			_ = lab.Close()
		}
	}()
	for i, n := range spec.Nodes {
		lab.hosts[n.Name] = rack.Hosts[i]
	}
	// The cluster's networks stay on this machine while the lab lives.
	if lab.unroute, err = testnet.Hold(ctx); err != nil {
		return lab, err
	}
	bins, err := testcluster.FindBinaries(ctx, spec.Logf)
	if err != nil {
		return lab, err
	}
	// The cluster's secrets, as k3s' first server would make them: every
	// server gets them, and tests talk to the API with its admin identity.
	if lab.CP, err = fakek3s.NewControlPlane(bins); err != nil {
		return lab, err
	}
	if lab.real() {
		set, err := images.Find(ctx, spec.Logf)
		if err != nil {
			return lab, err
		}
		for _, img := range set.Images {
			lab.CP.Images = append(lab.CP.Images, img.Tar)
		}
		lab.Images = set
	}
	for _, h := range rack.Hosts {
		if err := fakek3s.InstallInit(ctx, h); err != nil {
			return lab, fmt.Errorf("%s: %w", h.Name, err)
		}
		if err := fakek3s.InstallAptGet(ctx, h); err != nil {
			return lab, fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	// kwok keeps the Nodes without a real kubelet Ready, as long as the lab
	// lives, through whichever API server the inventory's first server runs.
	lab.kwok, err = testcluster.RunKwok(bins, filepath.Join(spec.Dir, "kwok"), lab.APIURL(), []byte(lab.CP.CAPEM), []byte(lab.CP.CertPEM), []byte(lab.CP.KeyPEM))
	if err != nil {
		return lab, err
	}
	lab.Airgap = filepath.Join(spec.Dir, "airgap")
	if err := lab.AddVersion(ctx, spec.Version); err != nil {
		return lab, err
	}
	lab.Kubeconfig = filepath.Join(spec.Dir, "kubeconfig")
	lab.Inventory = filepath.Join(spec.Dir, "rack.yaml")
	if err := lab.WriteInventory(spec.Extra); err != nil {
		return lab, err
	}
	return lab, nil
}

// AddVersion puts a fake k3s of version into the lab's airgap folder for
// both arches (test hosts run x86 binaries even when they pose as a Pi).
// One version at a time: the airgap folder holds what the inventory installs.
func (l *Lab) AddVersion(ctx context.Context, version string) error {
	bin, err := fakek3s.BuildK3s(ctx, version, cpfile.DefaultPath)
	if err != nil {
		return err
	}
	if l.real() {
		// A real node's kubelet reports the k3s version, as k3s' does.
		kubelet, err := testcluster.StampedKubelet(ctx, version, l.Spec.Logf)
		if err != nil {
			return err
		}
		if l.CP.Bin.Kubelets == nil {
			l.CP.Bin.Kubelets = map[string]string{}
		}
		l.CP.Bin.Kubelets[version] = kubelet
	}
	if err := l.writeControlPlanes(); err != nil {
		return err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(l.Airgap, 0o755); err != nil {
		return err
	}
	// The release's files, checksum files included: rack refuses an airgap
	// binary it cannot verify.
	sum := sha256.Sum256(data)
	for arch, name := range map[string]string{"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"} {
		if err := os.WriteFile(filepath.Join(l.Airgap, name), data, 0o755); err != nil {
			return err
		}
		sums := fmt.Sprintf("%x  %s\n", sum, name)
		if err := os.WriteFile(filepath.Join(l.Airgap, "sha256sum-"+arch+".txt"), []byte(sums), 0o644); err != nil {
			return err
		}
	}
	// Image tarballs as an airgapped rack has them; their content does not
	// matter to the fake, only that rack ships the right one to each arch.
	for _, arch := range []string{"amd64", "arm64"} {
		name := "k3s-airgap-images-" + arch + ".tar.zst"
		if err := os.WriteFile(filepath.Join(l.Airgap, name), []byte("images for "+arch+"\n"), 0o644); err != nil {
			return err
		}
	}
	l.Spec.Version = version
	return nil
}

func (l *Lab) real() bool {
	for _, n := range l.Spec.Nodes {
		if n.Real {
			return true
		}
	}
	return false
}

// writeControlPlanes writes every host's description of the test rack
// (which binaries, whether it runs a real node).
func (l *Lab) writeControlPlanes() error {
	for _, n := range l.Spec.Nodes {
		cp := *l.CP
		cp.RealNode = n.Real
		cp.PodNetwork = l.real()
		if !n.Real {
			cp.Images = nil
		}
		if err := fakek3s.WriteControlPlane(l.hosts[n.Name], &cp); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	return nil
}

// SparePool is the lab's spare addresses (Spec.Spare) as the entries of a
// MetalLB pool's addresses list, each a quoted /32: spare addresses need
// not be neighbours, and a range could take in another test rack's hosts.
func (l *Lab) SparePool() string {
	var out []string
	for _, a := range l.Rack.Spare {
		out = append(out, strconv.Quote(a+"/32"))
	}
	return strings.Join(out, ", ")
}

// Host is the test host of a node.
func (l *Lab) Host(node string) *testrack.Host { return l.hosts[node] }

// Env is what rack needs in its environment to use this lab and nothing of
// the machine's user: HOME (no ~/.ssh/config), KUBECONFIG.
func (l *Lab) Env() map[string]string {
	return map[string]string{"HOME": l.Dir, "KUBECONFIG": l.Kubeconfig, "XDG_CACHE_HOME": filepath.Join(l.Dir, "cache")}
}

// WriteInventory writes the lab's inventory; extra is YAML appended at the
// end (addons:, apps:).
func (l *Lab) WriteInventory(extra string) error {
	s := l.Spec
	var b strings.Builder
	fmt.Fprintf(&b, "# A test rack made by internal/testlab: every address is a test host in a\n# network namespace on this machine.\ncluster:\n  name: %s\n  k3s:\n    version: %s\n", s.Cluster, s.Version)
	if s.TokenFromEnv {
		b.WriteString("    token: ${RACK_K3S_TOKEN}\n")
	}
	fmt.Fprintf(&b, "    airgap: %s\n", l.Airgap)
	fmt.Fprintf(&b, "ssh:\n  user: %s\n  identityFile: %s\n  knownHosts: %s\n  hostKeyPolicy: strict\n", s.User, l.Rack.ClientKey, l.Rack.KnownHosts)
	b.WriteString("nodes:\n")
	for i, n := range s.Nodes {
		h := l.Rack.Hosts[i]
		fmt.Fprintf(&b, "  - name: %s\n    address: %s\n    role: %s\n", n.Name, h.Addr, n.Role)
		if n.Arch != "" {
			fmt.Fprintf(&b, "    arch: %s\n", n.Arch)
		}
		if len(n.Labels) > 0 {
			keys := make([]string, 0, len(n.Labels))
			for k := range n.Labels {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			b.WriteString("    labels:\n")
			for _, k := range keys {
				fmt.Fprintf(&b, "      %s: %q\n", k, n.Labels[k])
			}
		}
		if n.Longhorn || n.LonghornPath != "" || n.LocalPV != "" {
			b.WriteString("    storage:\n")
			switch {
			case n.LonghornPath != "":
				fmt.Fprintf(&b, "      longhorn: %s\n", strconv.Quote(n.LonghornPath))
			case n.Longhorn:
				b.WriteString("      longhorn: /var/lib/longhorn\n")
			}
			if n.LocalPV != "" {
				fmt.Fprintf(&b, "      local: [{name: %s-pv, path: %s, capacity: 10Gi}]\n", n.Name, strconv.Quote(n.LocalPV))
			}
		}
	}
	b.WriteString(extra)
	return os.WriteFile(l.Inventory, []byte(b.String()), 0o600)
}

// Close stops everything the lab started.
func (l *Lab) Close() error {
	var errs []error
	if l.kwok != nil {
		l.kwok.Stop()
	}
	if l.Rack != nil {
		errs = append(errs, l.Rack.Close())
	}
	if l.unroute != nil {
		errs = append(errs, l.unroute())
	}
	return errors.Join(errs...)
}

// FirstServer is the node every other joins, whose API server the lab's
// clients and kwok use (the inventory's default apiEndpoint).
func (l *Lab) FirstServer() string {
	for _, n := range l.Spec.Nodes {
		if n.Role == "server" {
			return n.Name
		}
	}
	return ""
}

// APIURL is the first server's API server.
func (l *Lab) APIURL() string {
	return "https://" + l.hosts[l.FirstServer()].Addr + ":6443"
}

// RESTConfig is an admin client configuration for the cluster (through
// the first server).
func (l *Lab) RESTConfig() *rest.Config {
	return &rest.Config{Host: l.APIURL(), QPS: 100, Burst: 200,
		TLSClientConfig: rest.TLSClientConfig{CAData: []byte(l.CP.CAPEM), CertData: []byte(l.CP.CertPEM), KeyData: []byte(l.CP.KeyPEM)}}
}

// Clientset is an admin clientset for the cluster.
func (l *Lab) Clientset() *kubernetes.Clientset {
	cs, err := kubernetes.NewForConfig(l.RESTConfig())
	if err != nil {
		panic(fmt.Sprintf("testlab: clientset: %v", err)) // only for a malformed config, a bug here
	}
	return cs
}

// EtcdMembers lists the etcd members as the named server's etcd sees them
// (their names), through etcdctl on that host.
func (l *Lab) EtcdMembers(ctx context.Context, server string) ([]string, error) {
	out, err := l.hosts[server].Exec(ctx, nodes.Quote(l.CP.Bin.Etcdctl)+" --endpoints http://127.0.0.1:2379 --dial-timeout 5s member list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Split(line, ", "); len(f) >= 3 {
			names = append(names, f[2])
		}
	}
	sort.Strings(names)
	return names, nil
}

// AddVersionDir puts a fake k3s of version beside the inventory's, in the
// airgap folder's subfolder named after it (<airgap>/<version>/, laid out
// like the folder itself), which is where rack upgrade apply takes each
// version of an upgrade path from. The folder itself and Spec.Version (what
// the inventory installs) stay as they are; call it once per version.
func (l *Lab) AddVersionDir(ctx context.Context, version string) error {
	top, spec := l.Airgap, l.Spec.Version
	defer func() { l.Airgap, l.Spec.Version = top, spec }()
	l.Airgap = filepath.Join(top, version)
	return l.AddVersion(ctx, version)
}

// LoadInventory loads the lab's inventory as rack does, failing the test on
// any problem in it.
func (l *Lab) LoadInventory(t testing.TB) *inventory.Inventory {
	t.Helper()
	inv, ps, err := inventory.Load(l.Inventory)
	if err != nil || ps.HasErrors() {
		t.Fatalf("lab inventory: %v %v", err, ps)
	}
	return inv
}

// K3sOptions are the options rack's node layer runs with against this lab:
// its SSH config and kubeconfig, a k3s binary cache of its own, and room
// for a busy 2-core machine, where a server starts its own etcd and API
// server.
func (l *Lab) K3sOptions(t testing.TB, inv *inventory.Inventory) k3s.Options {
	t.Helper()
	o, err := k3s.NewOptions(inv)
	if err != nil {
		t.Fatal(err)
	}
	o.Binaries.CacheDir = filepath.Join(l.Dir, "cache")
	o.Resolver = nodes.Resolver{Home: l.Dir}
	o.Kubeconfig = l.Kubeconfig
	o.ReadyTimeout = 3 * time.Minute
	return o
}
