package k3s_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/homelab/rack/internal/fakek3s"
	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
	"github.com/homelab/rack/nodes/k3s"
	"github.com/homelab/rack/nodes/kube"
)

// up runs what `rack up --nodes-only --yes` runs, against the lab.
func up(t *testing.T, lab *testlab.Lab) (*k3s.Plan, *k3s.Outcome, error) {
	t.Helper()
	inv := lab.LoadInventory(t)
	o := options(t, lab, inv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	plan, err := k3s.BuildPlan(ctx, inv, o)
	if err != nil {
		return nil, nil, err
	}
	out, err := k3s.Apply(ctx, plan, o)
	return plan, out, err
}

func options(t *testing.T, lab *testlab.Lab, inv *inventory.Inventory) k3s.Options {
	t.Helper()
	o := lab.K3sOptions(t, inv)
	o.RebootTimeout = time.Minute
	o.FanOut = nodes.FanOutOptions{Progress: nodes.NewProgress(testWriter{t})}
	return o
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func actions(p *k3s.Plan) map[string]k3s.Action {
	out := map[string]k3s.Action{}
	for _, np := range p.Nodes {
		out[np.Node] = np.Action
	}
	return out
}

func nodeList(t *testing.T, lab *testlab.Lab) map[string]corev1.Node {
	t.Helper()
	list, err := lab.Clientset().CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.Node{}
	for _, n := range list.Items {
		out[n.Name] = n
	}
	return out
}

func starts(t *testing.T, lab *testlab.Lab, node, unit string) int {
	t.Helper()
	n, err := fakek3s.Starts(context.Background(), lab.Host(node), unit)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUpOneServerTwoAgents is the common homelab: a Pi server, an x86 agent
// with storage, a Pi agent. Then: a re-run changes nothing and sends nothing,
// and a label change reconfigures exactly one node.
func TestUpOneServerTwoAgents(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{Nodes: []testlab.Node{
		{Name: "pinemaster", Role: "server", Pi: true, Arch: "arm64", Labels: map[string]string{"topology.kubernetes.io/zone": "shelf-1"}},
		{Name: "potato-7", Role: "agent", Arch: "amd64", Longhorn: true, LocalPV: "/storage"},
		{Name: "pinecone", Role: "agent", Pi: true},
	}})
	plan, out, err := up(t, lab)
	if err != nil {
		t.Fatalf("rack up: %v", err)
	}
	if a := actions(plan); a["pinemaster"] != k3s.ActionInstall || a["potato-7"] != k3s.ActionInstall || a["pinecone"] != k3s.ActionInstall {
		t.Fatalf("first plan %v", a)
	}
	if out.BytesSent == 0 {
		t.Fatal("a fresh install sent no bytes")
	}
	got := nodeList(t, lab)
	for _, name := range []string{"pinemaster", "potato-7", "pinecone"} {
		n, ok := got[name]
		if !ok || !kube.NodeReady(&n) || n.Status.NodeInfo.KubeletVersion != fakek3s.DefaultVersion {
			t.Fatalf("node %s: registered=%v ready=%v version=%s", name, ok, kube.NodeReady(&n), n.Status.NodeInfo.KubeletVersion)
		}
	}
	if got["pinemaster"].Labels["topology.kubernetes.io/zone"] != "shelf-1" || got["pinemaster"].Labels["kubernetes.io/arch"] != "arm64" {
		t.Errorf("pinemaster labels %v", got["pinemaster"].Labels)
	}
	if got["potato-7"].Labels["kubernetes.io/arch"] != "amd64" {
		t.Errorf("potato-7 arch label %v", got["potato-7"].Labels)
	}
	// Both Pis were prepared: flags added once, the original kept, one reboot each.
	for _, pi := range []string{"pinemaster", "pinecone"} {
		h := lab.Host(pi)
		line, _ := h.ReadFile("/boot/firmware/cmdline.txt")
		backup, err := h.ReadFile("/boot/firmware/cmdline.txt.rack-backup")
		if !strings.Contains(string(line), "cgroup_memory=1 cgroup_enable=memory") || err != nil || strings.Contains(string(backup), "cgroup") {
			t.Errorf("%s: cmdline %q, backup %q (%v)", pi, line, backup, err)
		}
		if boots, _ := fakek3s.Boots(context.Background(), h); boots != 1 {
			t.Errorf("%s rebooted %d times, want 1", pi, boots)
		}
	}
	// Airgap image tarballs reach each node for its own arch.
	for node, arch := range map[string]string{"pinemaster": "arm64", "potato-7": "amd64"} {
		got, err := lab.Host(node).ReadFile(k3s.ImagesDir + "/k3s-airgap-images-" + arch + ".tar.zst")
		if err != nil || string(got) != "images for "+arch+"\n" {
			t.Errorf("%s: airgap images for %s: %q %v", node, arch, got, err)
		}
	}
	if ok, _ := lab.Host("potato-7").FileExists("/storage"); !ok {
		t.Error("local volume folder /storage was not created")
	}
	// The config holds the token: 0600 on the node.
	if out, err := lab.Host("pinemaster").Exec(context.Background(), "stat -c %a /etc/rancher/k3s/config.yaml"); err != nil || strings.TrimSpace(string(out)) != "600" {
		t.Errorf("config.yaml mode %q (%v)", out, err)
	}
	// The kubeconfig: rack's own copy and the merged one, both 0600.
	for _, p := range []string{lab.Kubeconfig, filepath.Join(lab.Dir, ".rack", "lab", "kubeconfig")} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("kubeconfig %s: %v %v", p, st, err)
		}
	}

	before := map[string]int{"pinemaster": starts(t, lab, "pinemaster", "k3s"), "potato-7": starts(t, lab, "potato-7", "k3s-agent"), "pinecone": starts(t, lab, "pinecone", "k3s-agent")}
	plan, out, err = up(t, lab)
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	if plan.Changes() != 0 || out.BytesSent != 0 {
		t.Fatalf("re-run on a converged rack: %d changes, %d bytes sent (%v)", plan.Changes(), out.BytesSent, actions(plan))
	}
	for node, unit := range map[string]string{"pinemaster": "k3s", "potato-7": "k3s-agent", "pinecone": "k3s-agent"} {
		if n := starts(t, lab, node, unit); n != before[node] {
			t.Errorf("%s restarted on a converged re-run (%d → %d starts)", node, before[node], n)
		}
	}
	if boots, _ := fakek3s.Boots(context.Background(), lab.Host("pinemaster")); boots != 1 {
		t.Errorf("pinemaster rebooted again on the re-run (%d boots)", boots)
	}

	// One node's labels change: only it is reconfigured, and nothing
	// restarts: k3s would not apply node-label to a registered Node anyway,
	// so rack sets labels through the API. node-role.kubernetes.io/worker is
	// one a kubelet may not set on itself (NodeRestriction): it must never
	// reach k3s' config, or the agent would not start.
	lab.Spec.Nodes[1].Labels = map[string]string{"disk": "ssd", "node-role.kubernetes.io/worker": "true"}
	if err := lab.WriteInventory(""); err != nil {
		t.Fatal(err)
	}
	plan, _, err = up(t, lab)
	if err != nil {
		t.Fatalf("label change: %v", err)
	}
	if a := actions(plan); a["potato-7"] != k3s.ActionReconfigure || a["pinemaster"] != k3s.ActionNothing || a["pinecone"] != k3s.ActionNothing {
		t.Fatalf("label change plan %v", a)
	}
	for node, unit := range map[string]string{"pinemaster": "k3s", "potato-7": "k3s-agent", "pinecone": "k3s-agent"} {
		if n := starts(t, lab, node, unit); n != before[node] {
			t.Errorf("%s restarted by a label change (%d → %d starts)", node, before[node], n)
		}
	}
	got = nodeList(t, lab)
	if l := got["potato-7"].Labels; l["disk"] != "ssd" || l["node-role.kubernetes.io/worker"] != "true" {
		t.Errorf("labels not applied: %v", l)
	}
	if cfg, _ := lab.Host("potato-7").ReadFile(k3s.ConfigPath); strings.Contains(string(cfg), "node-role.kubernetes.io/worker") {
		t.Errorf("a label the kubelet may not set reached k3s' config:\n%s", cfg)
	}
	// Removed from the inventory: removed from the Node; labels k3s set stay.
	lab.Spec.Nodes[1].Labels = nil
	if err := lab.WriteInventory(""); err != nil {
		t.Fatal(err)
	}
	if _, _, err = up(t, lab); err != nil {
		t.Fatalf("label removal: %v", err)
	}
	got = nodeList(t, lab)
	if l := got["potato-7"].Labels; l["disk"] != "" || l["node-role.kubernetes.io/worker"] != "" || l["kubernetes.io/arch"] != "amd64" {
		t.Errorf("after removing the labels from the inventory: %v", l)
	}
	plan, _, err = up(t, lab)
	if err != nil || plan.Changes() != 0 {
		t.Fatalf("after the label changes the rack is not converged: %v %v", actions(plan), err)
	}
}

// TestUpHAEmbeddedEtcd: three servers, the first with cluster-init, the
// others joining it one at a time, then two agents.
func TestUpHAEmbeddedEtcd(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{User: "root", Nodes: []testlab.Node{
		{Name: "etcd-1", Role: "server"}, {Name: "etcd-2", Role: "server"}, {Name: "etcd-3", Role: "server"},
		{Name: "worker-1", Role: "agent"}, {Name: "worker-2", Role: "agent", Labels: map[string]string{"gpu": "none"}},
	}})
	if _, _, err := up(t, lab); err != nil {
		t.Fatalf("rack up: %v", err)
	}
	got := nodeList(t, lab)
	if len(got) != 5 {
		t.Fatalf("%d nodes registered, want 5", len(got))
	}
	for name, n := range got {
		if !kube.NodeReady(&n) || n.Status.NodeInfo.KubeletVersion != fakek3s.DefaultVersion {
			t.Errorf("%s not Ready at %s", name, fakek3s.DefaultVersion)
		}
	}
	cfg1, _ := lab.Host("etcd-1").ReadFile(k3s.ConfigPath)
	cfg2, _ := lab.Host("etcd-2").ReadFile(k3s.ConfigPath)
	if !strings.Contains(string(cfg1), "cluster-init: true") || strings.Contains(string(cfg2), "cluster-init") ||
		!strings.Contains(string(cfg2), "server: https://"+lab.Host("etcd-1").Addr+":6443") {
		t.Errorf("etcd-1 config:\n%s\netcd-2 config:\n%s", cfg1, cfg2)
	}
	// The servers form one real etcd cluster: every member sees all three.
	for _, s := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		members, err := lab.EtcdMembers(context.Background(), s)
		if err != nil || strings.Join(members, ",") != "etcd-1,etcd-2,etcd-3" {
			t.Errorf("etcd members seen from %s: %v %v", s, members, err)
		}
	}
	if got["worker-2"].Labels["gpu"] != "none" {
		t.Errorf("worker-2 labels %v", got["worker-2"].Labels)
	}
}

// TestUpRefusesArchMismatchBeforeAnyChange: the inventory says amd64 for a Pi.
func TestUpRefusesArchMismatchBeforeAnyChange(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{Nodes: []testlab.Node{
		{Name: "s", Role: "server"}, {Name: "pi", Role: "agent", Pi: true, Arch: "amd64"},
	}})
	_, _, err := up(t, lab)
	if !errors.Is(err, k3s.ErrRefused) || !strings.Contains(err.Error(), "pi: ") || !strings.Contains(err.Error(), "arch amd64 but the machine is arm64") {
		t.Fatalf("want a refusal naming the node and both arches, got %v", err)
	}
	for _, n := range []string{"s", "pi"} {
		for _, p := range []string{k3s.BinaryPath, k3s.ConfigPath, "/boot/firmware/cmdline.txt.rack-backup"} {
			if ok, _ := lab.Host(n).FileExists(p); ok {
				t.Errorf("%s: %s was written although the plan was refused", n, p)
			}
		}
	}
}

// TestUpOneHostDown: the others are done, the result names the dead one.
func TestUpOneHostDown(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{Nodes: []testlab.Node{
		{Name: "s", Role: "server"}, {Name: "a1", Role: "agent"}, {Name: "a2", Role: "agent"},
	}})
	if err := lab.Host("a2").StopSSHD(); err != nil {
		t.Fatal(err)
	}
	plan, out, err := up(t, lab)
	if err == nil || !strings.Contains(err.Error(), "a2") {
		t.Fatalf("want an error naming a2, got %v", err)
	}
	if actions(plan)["a2"] != k3s.ActionUnreachable {
		t.Errorf("plan for a2: %v", actions(plan)["a2"])
	}
	var sb strings.Builder
	_ = nodes.WriteSummary(&sb, out.Results)
	if !strings.Contains(sb.String(), "a2") {
		t.Errorf("summary does not name a2:\n%s", sb.String())
	}
	got := nodeList(t, lab)
	for _, name := range []string{"s", "a1"} {
		if n, ok := got[name]; !ok || !kube.NodeReady(&n) {
			t.Errorf("%s not Ready although only a2 was down", name)
		}
	}
}

// TestTokenNeverInArgv watches every process on the machine (the test hosts
// share its PID namespace) while rack installs with a known token.
func TestTokenNeverInArgv(t *testing.T) {
	const token = "rack-test-token-5f3c1e9a7b2d4c6e8f0a1b3c5d7e9f11"
	t.Setenv("RACK_K3S_TOKEN", token)
	lab := testlab.New(t, testlab.Spec{TokenFromEnv: true, User: "racksudo", Nodes: []testlab.Node{
		{Name: "s", Role: "server"}, {Name: "a", Role: "agent"},
	}})
	t.Setenv("RACK_SUDO_PASSWORD", lab.Rack.SudoPassword)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var leaks []string
	var scans int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			scans++
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				b, err := os.ReadFile(p)
				if err == nil && (strings.Contains(string(b), token) || strings.Contains(string(b), lab.Rack.SudoPassword)) {
					leaks = append(leaks, p+": "+strings.ReplaceAll(string(b), "\x00", " "))
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	_, _, err := up(t, lab)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("rack up: %v", err)
	}
	if scans < 10 {
		t.Fatalf("only %d scans of /proc during the run", scans)
	}
	if len(leaks) > 0 {
		t.Fatalf("the token or sudo password appeared in argv:\n%s", strings.Join(leaks, "\n"))
	}
	cfg, _ := lab.Host("a").ReadFile(k3s.ConfigPath)
	if !strings.Contains(string(cfg), token) {
		t.Fatal("the token did not reach the agent's config (so the check above proves nothing)")
	}
}

// TestHostileInventoryValues: paths in the inventory holding ;, $(…),
// backticks, quotes and spaces (the schema allows them in paths) reach the
// nodes as paths: rack plan and rack up create exactly those folders and
// run nothing else, anywhere.
func TestHostileInventoryValues(t *testing.T) {
	t.Parallel()
	const pwned = "/tmp/rack-hostile-pwned"
	paths := []string{
		"/srv/a b;touch " + pwned + "-semicolon",
		"/srv/$(touch " + pwned + "-dollar)",
		"/srv/`touch " + pwned + "-backtick`",
		`/srv/it's "quoted" && touch ` + pwned + `-and`,
	}
	lab := testlab.New(t, testlab.Spec{Nodes: []testlab.Node{
		{Name: "server", Role: "server", LocalPV: paths[0]},
		{Name: "agent", Role: "agent", LocalPV: paths[1], LonghornPath: paths[2]},
		{Name: "agent2", Role: "agent", LocalPV: paths[3]},
	}, Extra: "addons:\n  localPV: {}\n"})
	noMarker := func(when string) {
		t.Helper()
		for _, n := range lab.Spec.Nodes {
			out, err := lab.Host(n.Name).Exec(context.Background(), `ls -d /tmp/rack-hostile-pwned* 2>/dev/null || true`)
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("%s: %s ran an injected command: %q %v", when, n.Name, out, err)
			}
		}
		if m, _ := filepath.Glob(pwned + "*"); len(m) > 0 {
			t.Fatalf("%s: an injected command ran on this machine: %v", when, m)
		}
	}
	inv := lab.LoadInventory(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := k3s.BuildPlan(ctx, inv, options(t, lab, inv)); err != nil {
		t.Fatal(err)
	}
	noMarker("rack plan")
	if _, _, err := up(t, lab); err != nil {
		t.Fatalf("rack up: %v", err)
	}
	noMarker("rack up")
	for node, want := range map[string][]string{"server": {paths[0]}, "agent": {paths[1], paths[2]}, "agent2": {paths[3]}} {
		for _, p := range want {
			if ok, err := lab.Host(node).FileExists(p); !ok || err != nil {
				t.Errorf("%s: folder %q was not created (%v)", node, p, err)
			}
		}
	}
	plan, _, err := up(t, lab)
	if err != nil || plan.Changes() != 0 {
		t.Fatalf("re-run: %v %v", actions(plan), err)
	}
}

// TestPackagesOnAFreshPi: a freshly flashed Pi has no package lists and
// unattended-upgrades holds the dpkg lock for its first minutes. rack
// refreshes the lists and waits for the lock, visibly, instead of failing.
func TestPackagesOnAFreshPi(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{Nodes: []testlab.Node{
		{Name: "server", Role: "server"},
		{Name: "storage", Role: "agent", Pi: true, Longhorn: true},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := lab.Host("storage").Exec(ctx, fakek3s.HoldDpkgLockCmd(240)); err != nil {
		t.Fatalf("holding the dpkg lock: %v %s", err, out)
	}
	inv := lab.LoadInventory(t)
	o := options(t, lab, inv)
	var shown testenv.Buffer
	o.FanOut.Progress = nodes.NewPlainProgress(&shown)
	o.FanOut.Connect.Output = &shown
	plan, err := k3s.BuildPlan(ctx, inv, o)
	if err != nil {
		t.Fatal(err)
	}
	// unattended-upgrades finishes a few seconds after rack starts waiting
	// (not after a fixed time: the server's install before it takes longer
	// on a busy machine).
	released := make(chan error, 1)
	go func() {
		for !strings.Contains(shown.String(), "Waiting for cache lock") {
			if ctx.Err() != nil {
				released <- ctx.Err()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		_, err := lab.Host("storage").Exec(ctx, fakek3s.ReleaseDpkgLockCmd())
		released <- err
	}()
	if _, err := k3s.Apply(ctx, plan, o); err != nil {
		t.Fatalf("rack up: %v\n%s", err, shown.String())
	}
	if err := <-released; err != nil {
		t.Errorf("releasing the dpkg lock: %v", err)
	}
	out := shown.String()
	for _, want := range []string{"Waiting for cache lock", "held by process", "Setting up open-iscsi"} {
		if !strings.Contains(out, want) {
			t.Errorf("rack's output lacks %q:\n%s", want, out)
		}
	}
	if ok, _ := lab.Host("storage").FileExists("/usr/local/bin/iscsiadm"); !ok {
		t.Error("open-iscsi was not installed")
	}
}

// TestServerThatNeverGetsReady: upstream's unit has TimeoutStartSec=0, so
// `systemctl restart k3s` of a server that cannot start waits forever. rack
// bounds it by --timeout and fails the node with the end of its log.
func TestServerThatNeverGetsReady(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{Nodes: []testlab.Node{{Name: "server", Role: "server"}}})
	// The server's API server starts but never answers (as one whose
	// datastore hangs): the fake k3s waits for it, as k3s does.
	script := `printf '#!/bin/sh\nexec sleep 600\n' >/usr/local/bin/hung-apiserver && chmod 755 /usr/local/bin/hung-apiserver &&
sed -i 's#"APIServer": "[^"]*"#"APIServer": "/usr/local/bin/hung-apiserver"#' /etc/rancher/.fake/controlplane.json &&
grep -q hung-apiserver /etc/rancher/.fake/controlplane.json`
	if out, err := lab.Host("server").Exec(context.Background(), script); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	inv := lab.LoadInventory(t)
	o := options(t, lab, inv)
	o.ReadyTimeout = 15 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	plan, err := k3s.BuildPlan(ctx, inv, o)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = k3s.Apply(ctx, plan, o)
	took := time.Since(start)
	if err == nil {
		t.Fatal("rack up succeeded with a server that cannot start")
	}
	for _, want := range []string{"server", "restart k3s", "did not report ready within 15s", "the end of its log", "Waiting for kube-apiserver"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
	if took > time.Minute {
		t.Errorf("rack took %v with --timeout 15s", took)
	}
}
