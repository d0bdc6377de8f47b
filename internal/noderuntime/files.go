package noderuntime

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// containerdConfig is containerd 1.6's configuration (version 2) for one
// node. What this machine needs, measured: restrict_oom_score_adj (no
// CAP_SYS_RESOURCE here, so runc may not lower oom_score_adj: "can't get
// final child's PID from pipe: EOF"), the pause image containerd 1.6
// defaults to, and cgroupfs (runc's default, SystemdCgroup false).
func (c *Config) containerdConfig() string {
	return fmt.Sprintf(`# containerd of rack test node %[1]s, written by internal/noderuntime.
version = 2
root = %[2]q
state = %[3]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[4]q

[ttrpc]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  disable_hugetlb_controller = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
`, c.NodeName, c.path("containerd"), filepath.Join(c.RunDir, "containerd"), c.socket(),
		c.path("containerd", "opt"), PauseImage, c.CNIBinDir, c.cniConfDir())
}

// kubeletConfig is the KubeletConfiguration. failCgroupV1 false and the
// cgroupfs driver are what a cgroup v1 machine without systemd needs
// (kubelet >= 1.35 refuses cgroup v1 otherwise). Eviction thresholds are
// low because the test hosts' file systems are tmpfs shared with the rest
// of the machine: a busy CI machine must not make pods disappear.
func (c *Config) kubeletConfig() string {
	taints := ""
	if len(c.Taints) > 0 {
		var b strings.Builder
		b.WriteString("registerWithTaints:\n")
		for _, t := range c.Taints {
			key, effect, _ := strings.Cut(t, ":")
			key, value, _ := strings.Cut(key, "=")
			fmt.Fprintf(&b, "- key: %q\n  value: %q\n  effect: %q\n", key, value, effect)
		}
		taints = b.String()
	}
	return fmt.Sprintf(`# kubelet of rack test node %[1]s, written by internal/noderuntime.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[2]s
cgroupsPerQOS: true
containerRuntimeEndpoint: unix://%[3]s
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[4]s
authorization:
  mode: Webhook
clusterDNS: [%[5]s]
clusterDomain: %[6]s
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
hairpinMode: hairpin-veth
volumePluginDir: %[7]s
podLogsDir: %[8]s
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
rotateCertificates: false
serverTLSBootstrap: false
%[9]s`, c.NodeName, c.CgroupRoot, c.socket(), c.path("pki", "ca.crt"), c.ClusterDNS, c.ClusterDomain,
		filepath.Join(c.KubeletRootDir, "volumeplugins"), c.path("pod-logs"), taints)
}

// proxyConfig is kube-proxy's configuration: iptables mode, and none of the
// machine-wide conntrack sysctls (maxPerCore 0 and zero timeouts leave them
// alone: several nodes share one kernel).
func (c *Config) proxyConfig() string {
	return fmt.Sprintf(`# kube-proxy of rack test node %[1]s, written by internal/noderuntime.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %[2]s
hostnameOverride: %[1]s
mode: iptables
clusterCIDR: %[3]s
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
detectLocalMode: ClusterCIDR
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  syncPeriod: 10s
  minSyncPeriod: 1s
`, c.NodeName, c.path("kube-proxy.kubeconfig"), c.ClusterCIDR)
}

// kubeconfig renders a client-certificate kubeconfig by hand: client-go's
// writer would pull client-go into the fake k3s binary.
func kubeconfig(server string, ca, cert, key []byte) string {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: default
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: default
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: default
  context:
    cluster: default
    user: default
current-context: default
`, server, b64(ca), b64(cert), b64(key))
}

// cniConfig is the pod network on this node: a bridge (cni0) with the
// gateway on the node's pod CIDR and host-local addresses from it, the
// layout flannel's CNI plugin delegates to on k3s. No ipMasq here: the
// node masquerades traffic leaving the cluster CIDR itself (see
// network.go), so pod-to-pod traffic keeps its source address.
func (c *Config) cniConfig(podCIDR string) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "rack",
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      "cni0",
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": c.path("cni-ipam"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// writeFiles writes every configuration file (0600: two hold keys).
func (c *Config) writeFiles() error {
	files := map[string][]byte{
		c.path("etc", "containerd", "config.toml"): []byte(c.containerdConfig()),
		c.path("kubelet.yaml"):                     []byte(c.kubeletConfig()),
		c.path("kubelet.kubeconfig"):               []byte(kubeconfig(c.APIServer, c.CAPEM, c.KubeletCertPEM, c.KubeletKeyPEM)),
		c.path("kube-proxy.yaml"):                  []byte(c.proxyConfig()),
		c.path("kube-proxy.kubeconfig"):            []byte(kubeconfig(c.APIServer, c.CAPEM, c.ProxyCertPEM, c.ProxyKeyPEM)),
		c.path("pki", "ca.crt"):                    c.CAPEM,
	}
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
	}
	for _, d := range []string{c.cniConfDir(), c.logDir(), c.path("pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}
