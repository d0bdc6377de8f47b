package noderuntime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/homelab/rack/internal/child"
	"github.com/homelab/rack/internal/jsonapi"
	"github.com/homelab/rack/internal/procstat"
)

// Node is a running node: containerd, kubelet, kube-proxy and the route
// sync, children of the calling process.
type Node struct {
	cfg Config
	// PodCIDR is the node's pod CIDR, as the controller-manager allocated it.
	PodCIDR string

	mu         sync.Mutex
	containerd *child.Proc
	kubelet    *child.Proc
	proxy      *child.Proc
	cancel     context.CancelFunc
	syncDone   chan struct{}
	stopped    bool
}

// Extra private tmpfs mounts besides RunDir and KubeletRootDir: shim
// sockets (containerd 1.6 puts them under /run/containerd/s whatever its
// state dir) and the kubelet's /var/log/containers symlinks, both on
// machine-wide paths otherwise.
var privateRunDirs = []string{"/run/containerd", "/var/log/containers"}

// Start starts the node and returns once containerd, the kubelet and
// kube-proxy run and the pod network is configured on the node's pod CIDR
// (the Node registered and got one from the controller-manager). The Node
// then becomes Ready on its own; Stop or KillAll end it. On error Start
// leaves things as KillAll would.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("noderuntime: %w", err)
	}
	c := &cfg
	began := time.Now()
	n := &Node{cfg: cfg}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("noderuntime %s: %w", c.NodeName, err), n.KillAll(context.Background()))
		}
	}()
	if err := n.claimCgroupRoot(ctx); err != nil {
		return n, err
	}
	for _, d := range append([]string{c.RunDir, c.KubeletRootDir}, privateRunDirs...) {
		if err := ensureTmpfs(d, "0755"); err != nil {
			return n, err
		}
	}
	if err := c.writeFiles(); err != nil {
		return n, err
	}
	if err := c.setupNetwork(ctx); err != nil {
		return n, err
	}
	// Best effort: where /proc/sys/fs is read-only the default budget has to do
	// (it did for make test before it ran a dozen real nodes at once).
	_ = raiseInotifyLimits()

	if n.containerd, err = spawn("containerd", c.LogPath("containerd"), c.Containerd,
		"--config", c.path("etc", "containerd", "config.toml")); err != nil {
		return n, err
	}
	if err := n.waitContainerd(ctx); err != nil {
		return n, err
	}
	if err := n.Import(ctx, c.Images...); err != nil {
		return n, err
	}

	kubeletArgs := append([]string{
		"--config=" + c.path("kubelet.yaml"),
		"--kubeconfig=" + c.path("kubelet.kubeconfig"),
		"--root-dir=" + c.KubeletRootDir,
		"--hostname-override=" + c.NodeName,
		"--node-ip=" + c.NodeIP,
		"--node-labels=" + c.nodeLabels(),
		"--v=1",
	}, c.KubeletArgs...)
	if n.kubelet, err = spawn("kubelet", c.LogPath("kubelet"), c.Kubelet, kubeletArgs...); err != nil {
		return n, err
	}
	if n.proxy, err = spawn("kube-proxy", c.LogPath("kube-proxy"), c.KubeProxy,
		append([]string{"--config=" + c.path("kube-proxy.yaml"), "--v=1"}, c.ProxyArgs...)...); err != nil {
		return n, err
	}

	// system:kube-proxy reads Nodes: since 1.36 the Node authorizer lets a
	// kubelet read its own Node only (k3s's flannel has an identity of its
	// own for the same reason).
	reader := Admin{URL: c.APIServer, CAPEM: c.CAPEM, CertPEM: c.ProxyCertPEM, KeyPEM: c.ProxyKeyPEM}
	api, err := reader.client()
	if err != nil {
		return n, err
	}
	if n.PodCIDR, err = n.waitPodCIDR(ctx, api); err != nil {
		return n, err
	}
	conf, err := c.cniConfig(n.PodCIDR)
	if err != nil {
		return n, err
	}
	// containerd watches the folder and reports the network ready once a
	// configuration appears; the kubelet then marks the Node Ready.
	tmp := filepath.Join(c.cniConfDir(), ".10-rack.conflist")
	if err := os.WriteFile(tmp, conf, 0o644); err != nil {
		return n, err
	}
	if err := os.Rename(tmp, filepath.Join(c.cniConfDir(), "10-rack.conflist")); err != nil {
		return n, err
	}
	syncCtx, cancel := context.WithCancel(context.Background())
	n.cancel, n.syncDone = cancel, make(chan struct{})
	routes := PodRoutes{Client: reader, Dev: c.Interface, Self: c.NodeName,
		Logf: func(f string, a ...any) { c.Logf("noderuntime "+c.NodeName+": "+f, a...) }}
	go func() {
		defer close(n.syncDone)
		_ = routes.Run(syncCtx)
	}()
	c.Logf("noderuntime %s: containerd, kubelet and kube-proxy up, pod CIDR %s, in %v",
		c.NodeName, n.PodCIDR, time.Since(began).Round(time.Millisecond))
	return n, nil
}

// claimCgroupRoot sweeps up after crashed nodes, then records this node
// and creates its cgroup root, all under the records' lock.
func (n *Node) claimCgroupRoot(ctx context.Context) error {
	c := &n.cfg
	if err := ensureCgroupMounts(); err != nil {
		return err
	}
	unlock, err := lockRecords(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := sweepLocked(c.Logf); err != nil {
		c.Logf("noderuntime: cleaning up after crashed nodes: %v", err)
	}
	if err := writeRecord(c); err != nil {
		return err
	}
	return createCgroupRoot(c.CgroupRoot)
}

// Import imports OCI layout tars (internal/images) into the node's
// containerd, in the CRI's namespace, under the names they carry; an image
// already there is a no-op. Images reach a node only this way: nothing is
// ever pulled.
func (n *Node) Import(ctx context.Context, tars ...string) error {
	for _, tar := range tars {
		if _, err := run(ctx, n.cfg.Ctr, "--address", n.cfg.socket(), "--namespace", "k8s.io", "images", "import", tar); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) waitContainerd(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n.containerd.Exited() {
			return fmt.Errorf("containerd exited:\n%s", n.containerd.Tail(15))
		}
		if _, err := run(ctx, n.cfg.Ctr, "--address", n.cfg.socket(), "version"); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("containerd does not answer: %v\n%s", err, n.containerd.Tail(15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitPodCIDR waits until the kubelet has registered the Node and the
// controller-manager has given it a pod CIDR.
func (n *Node) waitPodCIDR(ctx context.Context, api *jsonapi.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	for {
		if err := n.Alive(); err != nil {
			return "", err
		}
		nd, err := getNode(ctx, api, n.cfg.NodeName)
		if err == nil && nd.Spec.PodCIDR != "" {
			return nd.Spec.PodCIDR, nil
		}
		if err == nil {
			err = errors.New("registered, but no spec.podCIDR yet (is the controller-manager allocating node CIDRs?)")
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for Node %s's pod CIDR: %v (last: %v)\nkubelet:\n%s",
				n.cfg.NodeName, ctx.Err(), last, child.Tail(n.cfg.LogPath("kubelet"), 15))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Alive returns an error naming a component that has exited.
func (n *Node) Alive() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range []*child.Proc{n.containerd, n.kubelet, n.proxy} {
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited (%v):\n%s", p.Name, p.Cmd.ProcessState, p.Tail(20))
		}
	}
	return nil
}

// Config is the node's configuration with defaults filled in.
func (n *Node) Config() Config { return n.cfg }

// Stop stops the node's processes (kubelet, kube-proxy, the route sync,
// containerd) the way `systemctl stop k3s` does with k3s's KillMode=process:
// the containers, their shims, mounts, cgroups and the pod network stay, so
// a restarted node (Start with the same Config) finds its pods running.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return nil
	}
	n.stopped = true
	if n.cancel != nil {
		n.cancel()
		<-n.syncDone
	}
	var errs []error
	// The kubelet first: with containerd gone it would only log errors.
	for _, p := range []*child.Proc{n.kubelet, n.proxy, n.containerd} {
		if err := p.Stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// KillAll stops the node and removes everything it made, like
// k3s-killall.sh: container processes and shims, mounts, the cgroup root,
// iptables chains, routes, the CNI bridge and IPAM state. DataDir (images,
// configuration) stays, as k3s-killall.sh leaves /var/lib/rancher.
func (n *Node) KillAll(ctx context.Context) error {
	return errors.Join(n.Stop(ctx), n.cfg.killAll(ctx))
}

// KillAll cleans up a node that is not running in this process (a crashed
// fake k3s, a k3s-killall.sh): everything Node.KillAll removes.
func KillAll(ctx context.Context, cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	return cfg.killAll(ctx)
}

func (c *Config) killAll(ctx context.Context) error {
	var errs []error
	if _, err := os.Stat(filepath.Join(cgroupMount, "memory")); err == nil {
		if err := killCgroup(c.CgroupRoot); err != nil {
			errs = append(errs, err)
		}
	}
	if err := killShims(c.socket()); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(append([]string{c.KubeletRootDir, c.RunDir}, privateRunDirs...)...); err != nil {
		errs = append(errs, err)
	}
	if err := c.cleanNetwork(ctx); err != nil {
		errs = append(errs, err)
	}
	if _, err := os.Stat(filepath.Join(cgroupMount, "memory")); err == nil {
		if err := removeCgroupRoot(c.CgroupRoot); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeRecord(c.CgroupRoot); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killShims kills the containerd shims serving this node's containerd
// (in this network namespace, their command line naming its socket: every
// host's socket has the same path) and waits for them to go. They left
// containerd's process tree when they started.
func killShims(socket string) error {
	self, err := nsOf(os.Getpid(), "net")
	if err != nil {
		return err
	}
	find := func() []int {
		return procstat.Pids(func(pid int, args []string) bool {
			if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
				return false
			}
			if ns, err := nsOf(pid, "net"); err != nil || ns != self {
				return false
			}
			return slices.Contains(args, socket)
		})
	}
	return procstat.KillUntilGone(find, 10*time.Second, "containerd shims", nil)
}

// inotifyFloor is the least of each inotify limit a test machine needs.
// Every kubelet, containerd and kube-proxy of every real node on the machine
// watches files as root, and root's budget is one for the whole kernel
// (default 128 instances): measured, with about a dozen real nodes up at once
// kube-proxy failed to start with "too many open files".
var inotifyFloor = map[string]int{
	"/proc/sys/fs/inotify/max_user_instances": 1024,
	"/proc/sys/fs/inotify/max_user_watches":   524288,
}

// raiseInotifyLimits raises each limit to its floor; it never lowers one.
func raiseInotifyLimits() error {
	for path, floor := range inotifyFloor {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if cur, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && cur >= floor {
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(floor)), 0o644); err != nil {
			return fmt.Errorf("raising %s to %d (real nodes share root's inotify budget): %w", path, floor, err)
		}
	}
	return nil
}
