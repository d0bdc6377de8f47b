package k3s

import (
	"strings"
	"testing"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
)

func testInventory(t *testing.T, text string) *inventory.Inventory {
	t.Helper()
	inv, ps := inventory.Parse("rack.yaml", []byte(text), inventory.Options{})
	if ps.HasErrors() {
		t.Fatalf("bad test inventory:\n%v", ps)
	}
	return inv
}

const threeServers = `cluster:
  name: lab
  k3s: {version: v1.33.5+k3s1, disable: [traefik], args: ["--etcd-snapshot-retention=10", "--kube-apiserver-arg=a=1", "--kube-apiserver-arg=b=2"]}
  apiEndpoint: 10.0.0.100
nodes:
  - {name: s1, address: 10.0.0.1, role: server, labels: {zone: a, rack: "1"}, taints: ["dedicated=cp:NoSchedule"]}
  - {name: s2, address: 10.0.0.2, role: server}
  - {name: s3, address: 10.0.0.3, role: server}
  - {name: a1, address: 10.0.0.4, role: agent, storage: {longhorn: /var/lib/longhorn}}
addons:
  metallb: {pools: [{name: lan, addresses: [10.0.0.200/29]}]}
`

func TestConfig(t *testing.T) {
	inv := testInventory(t, threeServers)
	cases := []struct {
		node      string
		want, not []string
	}{
		{"s1", []string{"token: T\n", "cluster-init: true\n", "node-name: s1\n", "node-ip: 10.0.0.1\n", "node-label:\n    - rack=1\n    - zone=a\n",
			"node-taint:\n    - dedicated=cp:NoSchedule\n", "disable:\n    - traefik\n    - servicelb\n", "tls-san:\n    - 10.0.0.100\n",
			"write-kubeconfig-mode: \"0600\"\n", "etcd-snapshot-retention: \"10\"\n", "kube-apiserver-arg:\n    - a=1\n    - b=2\n"},
			[]string{"server:"}},
		{"s2", []string{"server: https://10.0.0.1:6443\n", "node-name: s2\n"}, []string{"cluster-init"}},
		{"a1", []string{"server: https://10.0.0.100:6443\n", "node-name: a1\n"}, []string{"cluster-init", "disable:", "tls-san:", "write-kubeconfig-mode"}},
	}
	for _, tc := range cases {
		n, _ := inv.Node(tc.node)
		got, err := Config(inv, n, "T")
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(got), w) {
				t.Errorf("%s: config lacks %q:\n%s", tc.node, w, got)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(string(got), w) {
				t.Errorf("%s: config should not have %q:\n%s", tc.node, w, got)
			}
		}
		again, _ := Config(inv, n, "T")
		if string(again) != string(got) {
			t.Errorf("%s: config is not deterministic", tc.node)
		}
	}
	single := testInventory(t, "cluster: {name: x, k3s: {version: v1.33.5+k3s1}}\nnodes: [{name: s, address: 10.0.0.1, role: server}]\n")
	n, _ := single.Node("s")
	got, _ := Config(single, n, "T")
	if strings.Contains(string(got), "cluster-init") || strings.Contains(string(got), "server:") {
		t.Errorf("a single server needs neither cluster-init nor server:\n%s", got)
	}
}

func TestServiceUnit(t *testing.T) {
	inv := testInventory(t, threeServers)
	s, _ := inv.Node("s1")
	a, _ := inv.Node("a1")
	cases := []struct {
		node       inventory.Node
		init, path string
		want       []string
	}{
		{s, InitSystemd, "/etc/systemd/system/k3s.service", []string{"ExecStart=/usr/local/bin/k3s server\n", "Type=notify", "KillMode=process", "EnvironmentFile=-/etc/systemd/system/k3s.service.env"}},
		{a, InitSystemd, "/etc/systemd/system/k3s-agent.service", []string{"ExecStart=/usr/local/bin/k3s agent\n", "Type=exec"}},
		{a, InitOpenRC, "/etc/init.d/k3s-agent", []string{"#!/sbin/openrc-run", `command_args="agent"`}},
	}
	for _, tc := range cases {
		u, err := ServiceUnit(tc.node, tc.init)
		if err != nil {
			t.Fatal(err)
		}
		if u.Path != tc.path {
			t.Errorf("path %s, want %s", u.Path, tc.path)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(u.Content), w) {
				t.Errorf("%s lacks %q", u.Path, w)
			}
		}
		if strings.Contains(string(u.Content)+string(u.Env), "token") {
			t.Errorf("%s: the token belongs in config.yaml only", u.Path)
		}
	}
	if _, err := ServiceUnit(s, "runit"); err == nil || !strings.Contains(err.Error(), "neither systemd nor OpenRC") {
		t.Errorf("unknown init: %v", err)
	}
}

func TestPiCmdline(t *testing.T) {
	cases := []struct {
		in, out string
		changed bool
	}{
		{"console=tty1 root=PARTUUID=1 rootwait\n", "console=tty1 root=PARTUUID=1 rootwait cgroup_memory=1 cgroup_enable=memory\n", true},
		{"rootwait cgroup_enable=memory\n", "rootwait cgroup_enable=memory cgroup_memory=1\n", true},
		{"rootwait cgroup_memory=1 cgroup_enable=memory\n", "rootwait cgroup_memory=1 cgroup_enable=memory\n", false},
	}
	for _, tc := range cases {
		out, changed := PiCmdline(tc.in)
		if out != tc.out || changed != tc.changed {
			t.Errorf("PiCmdline(%q) = %q, %v; want %q, %v", tc.in, out, changed, tc.out, tc.changed)
		}
	}
}

func TestPlanNode(t *testing.T) {
	inv := testInventory(t, threeServers)
	s1, _ := inv.Node("s1")
	a1, _ := inv.Node("a1")
	unit, _ := ServiceUnit(s1, InitSystemd)
	cfg, _ := Config(inv, s1, "T")
	s1.Arch = "arm64"
	desired := Desired{Node: s1, Version: "v1.33.5+k3s1", Arch: "arm64", Binary: Artifact{SHA256: "abc"}, Config: cfg, Unit: unit}
	converged := nodes.Facts{Arch: "arm64", ArchKnown: true, Machine: "aarch64", Init: InitSystemd, K3sInstalled: true, K3sVersion: "v1.33.5+k3s1",
		K3sSHA256: "abc", K3sUnitPath: unit.Path, K3sUnit: string(unit.Content), K3sConfigPresent: true, K3sConfig: string(cfg)}
	obs := func(f nodes.Facts) Observed {
		return Observed{Facts: f, Active: true, EnvSHA256: sha256Hex(unit.Env)}
	}
	edit := func(fn func(*nodes.Facts)) nodes.Facts { f := converged; fn(&f); return f }
	otherLabels := strings.Replace(string(cfg), "zone=a", "zone=b", 1)

	cases := []struct {
		name    string
		d       Desired
		o       Observed
		action  Action
		reason  string
		restart bool
	}{
		{"converged", desired, obs(converged), ActionNothing, "", false},
		{"fresh", desired, obs(nodes.Facts{Arch: "arm64", ArchKnown: true, Init: InitSystemd}), ActionInstall, "k3s is not installed", true},
		{"upgrade", desired, obs(edit(func(f *nodes.Facts) { f.K3sVersion = "v1.32.9+k3s1"; f.K3sSHA256 = "old" })), ActionUpgrade, "k3s v1.32.9+k3s1 → v1.33.5+k3s1", true},
		{"patch by k3sN", desired, obs(edit(func(f *nodes.Facts) { f.K3sVersion = "v1.33.5+k3s0" })), ActionUpgrade, "→ v1.33.5+k3s1", true},
		{"downgrade refused", desired, obs(edit(func(f *nodes.Facts) { f.K3sVersion = "v1.33.5+k3s2" })), ActionRefused, "never downgrades", false},
		{"skipping a minor refused", desired, obs(edit(func(f *nodes.Facts) { f.K3sVersion = "v1.31.4+k3s1" })), ActionRefused, "skips 1 minor", false},
		{"damaged binary", desired, obs(edit(func(f *nodes.Facts) { f.K3sSHA256 = "evil" })), ActionInstall, "differs from the release", true},
		{"labels changed", desired, obs(edit(func(f *nodes.Facts) { f.K3sConfig = otherLabels })), ActionReconfigure, "config.yaml changes: node-label", true},
		{"token changed names no value", desired, obs(edit(func(f *nodes.Facts) { f.K3sConfig = strings.Replace(string(cfg), "token: T", "token: OLD", 1) })), ActionReconfigure, "config.yaml changes: token", true},
		{"unit changed", desired, obs(edit(func(f *nodes.Facts) { f.K3sUnit = "old" })), ActionReconfigure, "service unit differs", true},
		{"stopped", desired, Observed{Facts: converged, EnvSHA256: sha256Hex(unit.Env)}, ActionRestart, "installed but not running", true},
		{"arch mismatch", desired, obs(edit(func(f *nodes.Facts) { f.Arch = "amd64"; f.Machine = "x86_64" })), ActionRefused, "inventory says arch arm64 but the machine is amd64", false},
		{"unknown arch", desired, obs(edit(func(f *nodes.Facts) { f.ArchKnown = false; f.Machine = "riscv64" })), ActionRefused, "unsupported machine", false},
		{"role changed", Desired{Node: a1, Version: desired.Version, Arch: "arm64", Binary: desired.Binary, Config: cfg, Unit: unit}, obs(converged), ActionRefused, "role agent", false},
		{"pi needs cgroups", desired, obs(edit(func(f *nodes.Facts) {
			f.Model = "Raspberry Pi 4 Model B Rev 1.4"
			f.CmdlinePath = "/boot/firmware/cmdline.txt"
			f.Cmdline = "console=tty1 rootwait\n"
		})), ActionReconfigure, "/boot/firmware/cmdline.txt lacks cgroup_memory=1 cgroup_enable=memory", false},
		{"pi already prepared", desired, obs(edit(func(f *nodes.Facts) {
			f.Model = "Raspberry Pi 4 Model B Rev 1.4"
			f.CmdlinePath = "/boot/firmware/cmdline.txt"
			f.Cmdline = "rootwait cgroup_memory=1 cgroup_enable=memory\n"
		})), ActionNothing, "", false},
		{"longhorn packages", func() Desired { d := desired; d.Packages = []string{"open-iscsi", "nfs-common"}; return d }(), obs(converged), ActionReconfigure, "Longhorn storage needs open-iscsi, nfs-common", false},
		{"local volume folder", func() Desired { d := desired; d.Dirs = []string{"/storage"}; return d }(), obs(converged), ActionReconfigure, "local volume folder(s) missing: /storage", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanNode(tc.d, tc.o)
			if p.Action != tc.action {
				t.Fatalf("action %s, want %s (reasons %q)", p.Action, tc.action, p.Reasons)
			}
			if tc.reason != "" && !strings.Contains(strings.Join(p.Reasons, "; "), tc.reason) {
				t.Errorf("reasons %q lack %q", p.Reasons, tc.reason)
			}
			if p.Restart != tc.restart {
				t.Errorf("restart = %v, want %v", p.Restart, tc.restart)
			}
			if strings.Contains(strings.Join(p.Reasons, " ")+strings.Join(p.Steps, " "), "OLD") {
				t.Error("the plan shows a token value")
			}
		})
	}
}
