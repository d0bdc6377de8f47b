package noderuntime

import (
	"encoding/json"
	"strings"
	"testing"
)

func testConfig() Config {
	return Config{
		NodeName: "server1", NodeIP: "198.18.0.2", APIServer: "https://198.18.0.1:6443",
		CAPEM: []byte("ca"), KubeletCertPEM: []byte("c"), KubeletKeyPEM: []byte("k"), ProxyCertPEM: []byte("c"), ProxyKeyPEM: []byte("k"),
		Kubelet: "/bin/kubelet", KubeProxy: "/bin/kube-proxy",
		ServiceGateway: "198.18.0.1", CgroupRoot: "/rack-testrack-1",
		Labels: map[string]string{"zone": "a"}, Taints: []string{"dedicated=db:NoSchedule"},
	}
}

func TestSetDefaultsRequiresIdentity(t *testing.T) {
	var c Config
	c.CgroupRoot = "/rack-x"
	err := c.setDefaults()
	for _, want := range []string{"NodeName", "NodeIP", "APIServer", "Kubelet", "KubeProxy", "KubeletCertPEM", "ProxyKeyPEM"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("setDefaults on an empty Config: %v, want it to name %s", err, want)
		}
	}
	c = testConfig()
	c.CgroupRoot = "/kubepods"
	if err := c.setDefaults(); err == nil {
		t.Error("a cgroup root outside /rack-* was accepted: Sweep would never find it")
	}
}

func TestRenderedConfigs(t *testing.T) {
	c := testConfig()
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	kubelet := c.kubeletConfig()
	for _, want := range []string{"failCgroupV1: false", "cgroupDriver: cgroupfs", "cgroupRoot: /rack-testrack-1",
		"containerRuntimeEndpoint: unix:///run/k3s/containerd/containerd.sock", "key: \"dedicated\"\n  value: \"db\"\n  effect: \"NoSchedule\""} {
		if !strings.Contains(kubelet, want) {
			t.Errorf("kubelet config lacks %q:\n%s", want, kubelet)
		}
	}
	ctrd := c.containerdConfig()
	for _, want := range []string{"restrict_oom_score_adj = true", `sandbox_image = "registry.k8s.io/pause:3.6"`,
		`bin_dir = "/usr/lib/cni"`, "netns_mounts_under_state_dir = true", "SystemdCgroup = false"} {
		if !strings.Contains(ctrd, want) {
			t.Errorf("containerd config lacks %q", want)
		}
	}
	if got := c.nodeLabels(); got != RealKubeletLabel+"=real,zone=a" {
		t.Errorf("node labels %q", got)
	}
	var cni struct {
		Plugins []map[string]any
	}
	b, err := c.cniConfig("10.42.3.0/24")
	if err != nil || json.Unmarshal(b, &cni) != nil || cni.Plugins[0]["type"] != "bridge" {
		t.Fatalf("cni config %s %v", b, err)
	}
	if !strings.Contains(string(b), `"subnet": "10.42.3.0/24"`) {
		t.Errorf("cni config does not use the pod CIDR: %s", b)
	}
}
