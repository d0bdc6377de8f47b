package k3s

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/kube"
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
	agentUnit, _ := ServiceUnit(a1, InitSystemd)
	cfg, _ := Config(inv, s1, "T")
	s1.Arch = "arm64"
	desired := Desired{Node: s1, Version: "v1.33.5+k3s1", Arch: "arm64", BinarySHA256: "abc", Config: cfg, Unit: unit, FirstServer: true}
	record := string(appliedFor(desired).json())
	converged := nodes.Facts{Arch: "arm64", ArchKnown: true, Machine: "aarch64", Init: InitSystemd, K3sInstalled: true, K3sVersion: "v1.33.5+k3s1",
		K3sSHA256: "abc", K3sUnitPath: unit.Path, K3sUnit: string(unit.Content), K3sConfigPresent: true, K3sConfig: string(cfg),
		K3sApplied: record, CgroupVersion: 1, MemoryCgroup: true}
	// The Node as rack left it: its labels, its taint, and the record of both.
	node := func(zone string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "s1",
			Labels:      map[string]string{"zone": zone, "rack": "1", "kubernetes.io/arch": "arm64"},
			Annotations: map[string]string{kube.AnnotationLabels: "rack,zone", kube.AnnotationTaints: "dedicated=cp:NoSchedule"}},
			Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "dedicated", Value: "cp", Effect: "NoSchedule"}}}}
	}
	obs := func(f nodes.Facts) Observed {
		return Observed{Facts: f, Active: true, EnvSHA256: sha256Hex(unit.Env), Node: node("a")}
	}
	edit := func(fn func(*nodes.Facts)) nodes.Facts { f := converged; fn(&f); return f }
	otherLabels := strings.Replace(string(cfg), "zone=a", "zone=b", 1)
	pi := func(cmdline string, memory bool) nodes.Facts {
		return edit(func(f *nodes.Facts) {
			f.Model, f.CmdlinePath, f.Cmdline, f.MemoryCgroup = "Raspberry Pi 4 Model B Rev 1.4", "/boot/firmware/cmdline.txt", cmdline, memory
		})
	}
	staleRecord := strings.Replace(record, `"binary": "abc"`, `"binary": "old"`, 1)
	restartSteps := []string{"restart k3s", "fetch the kubeconfig", "wait until Ready at v1.33.5+k3s1", "record what k3s runs from in " + nodes.AppliedPath}
	installSteps := append([]string{"upload k3s v1.33.5+k3s1 (arm64) to /usr/local/bin/k3s"}, restartSteps...)

	cases := []struct {
		name   string
		d      Desired
		o      Observed
		action Action
		reason string
		steps  []string
	}{
		{"converged", desired, obs(converged), ActionNothing, "", []string{"fetch the kubeconfig"}},
		{"fresh", desired, Observed{Facts: nodes.Facts{Arch: "arm64", ArchKnown: true, Init: InitSystemd}}, ActionInstall, "k3s is not installed",
			append(append([]string{"upload k3s v1.33.5+k3s1 (arm64) to /usr/local/bin/k3s", "write /etc/rancher/k3s/config.yaml", "write /etc/systemd/system/k3s.service"}, restartSteps...), "set labels and taints through the API")},
		// Version changes are rack upgrade apply's (drained, one node at a time).
		{"upgrade refused: rack upgrade apply's", desired, obs(edit(func(f *nodes.Facts) { f.K3sVersion = "v1.32.9+k3s1"; f.K3sSHA256 = "old" })), ActionRefused, "rack up does not change versions; use rack upgrade apply --to v1.33.5+k3s1", nil},
		{"patch release refused: rack upgrade apply's", desired, obs(edit(func(f *nodes.Facts) { f.K3sVersion = "v1.33.4+k3s2" })), ActionRefused, "use rack upgrade apply", nil},
		{"downgrade refused", desired, obs(edit(func(f *nodes.Facts) { f.K3sVersion = "v1.33.5+k3s2" })), ActionRefused, "never downgrades", nil},
		{"skipping a minor refused", desired, obs(edit(func(f *nodes.Facts) { f.K3sVersion = "v1.31.4+k3s1" })), ActionRefused, "use rack upgrade apply", nil},
		{"damaged binary", desired, obs(edit(func(f *nodes.Facts) { f.K3sSHA256 = "evil" })), ActionInstall, "differs from the release", installSteps},
		{"labels only: no restart", desired, func() Observed {
			o := obs(edit(func(f *nodes.Facts) { f.K3sConfig = otherLabels }))
			o.Node = node("b")
			return o
		}(),
			ActionReconfigure, "config.yaml changes: node-label", []string{"write /etc/rancher/k3s/config.yaml", "fetch the kubeconfig", "set labels and taints through the API"}},
		{"label set by hand is put back", desired, func() Observed { o := obs(converged); o.Node = node("b"); return o }(),
			ActionReconfigure, "labels and taints: label zone=a", []string{"fetch the kubeconfig", "set labels and taints through the API"}},
		{"not registered yet", desired, func() Observed { o := obs(converged); o.Node = nil; return o }(),
			ActionReconfigure, "", []string{"fetch the kubeconfig", "set labels and taints through the API"}},
		{"token changed names no value", desired, obs(edit(func(f *nodes.Facts) { f.K3sConfig = strings.Replace(string(cfg), "token: T", "token: OLD", 1) })), ActionReconfigure, "config.yaml changes: token",
			append([]string{"write /etc/rancher/k3s/config.yaml"}, restartSteps...)},
		{"unit changed", desired, obs(edit(func(f *nodes.Facts) { f.K3sUnit = "old" })), ActionReconfigure, "service unit differs",
			append([]string{"write /etc/systemd/system/k3s.service"}, restartSteps...)},
		{"stopped", desired, Observed{Facts: converged, EnvSHA256: sha256Hex(unit.Env), Node: node("a")}, ActionRestart, "installed but not running", restartSteps},
		{"killed before the restart", desired, obs(edit(func(f *nodes.Facts) { f.K3sApplied = staleRecord })), ActionRestart, "not restarted since", restartSteps},
		{"no record", desired, obs(edit(func(f *nodes.Facts) { f.K3sApplied = "" })), ActionRestart, "no record of what the running k3s started from", restartSteps},
		{"temp files of a killed upload", desired, obs(edit(func(f *nodes.Facts) {
			f.TempFiles = []string{"/usr/local/bin/.k3s.rack-tmp-0123abcd", "/etc/passwd", "/usr/local/bin/.k3s.rack-tmp-x;reboot"}
		})), ActionReconfigure, "", []string{"remove 1 temp file(s) of an interrupted upload", "fetch the kubeconfig"}},
		{"arch mismatch", desired, obs(edit(func(f *nodes.Facts) { f.Arch = "amd64"; f.Machine = "x86_64" })), ActionRefused, "inventory says arch arm64 but the machine is amd64", nil},
		{"unknown arch", desired, obs(edit(func(f *nodes.Facts) { f.ArchKnown = false; f.Machine = "riscv64" })), ActionRefused, "unsupported machine", nil},
		{"memory cgroup off", desired, obs(edit(func(f *nodes.Facts) { f.MemoryCgroup = false })), ActionRefused, "memory cgroup is off", nil},
		{"server to agent refused", Desired{Node: a1, Version: desired.Version, Arch: "arm64", BinarySHA256: "abc", Config: cfg, Unit: agentUnit}, obs(converged), ActionRefused, "role server), but the inventory says role agent", nil},
		{"agent to server refused", desired, obs(edit(func(f *nodes.Facts) { f.K3sUnitPath = agentUnit.Path; f.K3sUnit = string(agentUnit.Content) })), ActionRefused, "role agent), but the inventory says role server", nil},
		{"pi needs cgroups", desired, obs(pi("console=tty1 rootwait\n", false)), ActionReconfigure, "/boot/firmware/cmdline.txt lacks cgroup_memory=1 cgroup_enable=memory",
			[]string{"edit /boot/firmware/cmdline.txt (the original kept as cmdline.txt.rack-backup)", "reboot", "fetch the kubeconfig"}},
		{"pi edited, reboot pending", desired, obs(pi("rootwait cgroup_memory=1 cgroup_enable=memory\n", false)), ActionReconfigure, "the reboot after the edit has not happened yet",
			[]string{"reboot", "fetch the kubeconfig"}},
		{"pi already prepared", desired, obs(pi("rootwait cgroup_memory=1 cgroup_enable=memory\n", true)), ActionNothing, "", []string{"fetch the kubeconfig"}},
		{"longhorn packages", func() Desired { d := desired; d.Packages = []nodes.Package{nodes.OpenISCSI, nodes.NFSClient}; return d }(), obs(converged), ActionReconfigure, "Longhorn storage needs open-iscsi, nfs-common",
			[]string{"install open-iscsi, nfs-common", "fetch the kubeconfig"}},
		{"local volume folder", func() Desired { d := desired; d.Dirs = []string{"/storage"}; return d }(), obs(converged), ActionReconfigure, "local volume folder /storage is missing",
			[]string{"create /storage", "fetch the kubeconfig"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanNode(tc.d, tc.o, nil)
			if p.Action != tc.action {
				t.Fatalf("action %s, want %s (reasons %q, steps %q)", p.Action, tc.action, p.Reasons, nodes.StepNames(p.Steps))
			}
			if tc.reason != "" && !strings.Contains(strings.Join(p.Reasons, "; "), tc.reason) {
				t.Errorf("reasons %q lack %q", p.Reasons, tc.reason)
			}
			got := nodes.StepNames(p.Steps)
			if tc.steps == nil {
				tc.steps = []string{}
			}
			if strings.Join(got, "|") != strings.Join(tc.steps, "|") {
				t.Errorf("steps\n  %q\nwant\n  %q", got, tc.steps)
			}
			for _, s := range p.Steps {
				if s.Why == "" || s.Do == nil {
					t.Errorf("step %q has no reason or no work", s.Name)
				}
			}
			text, _ := json.Marshal(p)
			if strings.Contains(string(text), "OLD") || strings.Contains(string(text), "token: T") {
				t.Error("the plan shows a token value")
			}
		})
	}
}

// TestChangesOnly: rack node add refuses a plan that would touch another
// node; other nodes may be in it unchanged (the first server, for its
// kubeconfig), unreachable or refused — neither changes them.
func TestChangesOnly(t *testing.T) {
	np := func(node string, a Action, reasons ...string) NodePlan {
		return NodePlan{Node: node, Action: a, Reasons: reasons}
	}
	cases := []struct {
		name  string
		nodes []NodePlan
		want  string // substring of the error; empty: allowed
	}{
		{"the node alone", []NodePlan{np("wrk-2", ActionInstall, "k3s is not installed")}, ""},
		{"first server unchanged", []NodePlan{np("srv-1", ActionNothing), np("wrk-2", ActionInstall)}, ""},
		{"nothing to do at all", []NodePlan{np("srv-1", ActionNothing), np("wrk-2", ActionNothing)}, ""},
		{"another node unreachable or refused", []NodePlan{np("wrk-1", ActionUnreachable), np("wrk-3", ActionRefused), np("wrk-2", ActionInstall)}, ""},
		{"first server needs an upgrade", []NodePlan{np("srv-1", ActionUpgrade, "runs v1.33.4+k3s1, want v1.33.5+k3s1"), np("wrk-2", ActionInstall)},
			"changes wrk-2 only, but srv-1's plan changes it too (runs v1.33.4+k3s1, want v1.33.5+k3s1): run rack up first"},
		{"another node's config changed", []NodePlan{np("wrk-1", ActionReconfigure, "config.yaml changed", "unit changed"), np("wrk-2", ActionNothing)},
			"wrk-1's plan changes it too (config.yaml changed; unit changed)"},
		{"a restart is a change", []NodePlan{np("wrk-1", ActionRestart, "the service is not running")}, "wrk-1's plan changes it too"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := (&Plan{Nodes: tc.nodes}).ChangesOnly("wrk-2")
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
}
