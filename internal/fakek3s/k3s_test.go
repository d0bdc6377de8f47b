package fakek3s

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testrack"
	"github.com/homelab/rack/nodes/kube"
)

// k3sUnit is the unit k3s's install script writes (without the modprobe
// lines, which would load modules on the machine running the tests).
const k3sUnit = `[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-/etc/systemd/system/%N.service.env
KillMode=process
Delegate=yes
User=root
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=/bin/sh -xc '! /usr/bin/systemctl is-enabled --quiet nm-cloud-setup.service 2>/dev/null'
ExecStart=/usr/local/bin/k3s \
    {{ROLE}} \
`

func k3sUnitFor(role string) string { return strings.ReplaceAll(k3sUnit, "{{ROLE}}", role) }

const clusterToken = "s3cr3t-cluster-token-abc"

func TestVersionOutput(t *testing.T) {
	t.Parallel()
	bin := Build(t, DefaultVersion)
	for _, flag := range []string{"--version", "-v"} {
		out, err := exec.Command(bin, flag).Output()
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 2 || lines[0] != "k3s version "+DefaultVersion+" (fake0000)" || !strings.HasPrefix(lines[1], "go version go1.") {
			t.Errorf("k3s %s: %q", flag, out)
		}
	}
	if other := Build(t, "v1.32.9+k3s1"); other == bin {
		t.Error("two versions share one binary")
	}
}

func TestFakeK3sCluster(t *testing.T) {
	t.Parallel()
	r := testrack.New(t, 3, testrack.WithPi(1))
	// The cluster's secrets and binaries; the server runs its own control
	// plane (etcd or SQLite, kube-apiserver, controllers), kwok keeps the
	// Nodes Ready.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, cs := installOn(ctx, t, r, r.Hosts[0])
	server, agent, intruder := r.Hosts[0], r.Hosts[1], r.Hosts[2]
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("FAKEK3S_LOGS") != "" {
			for _, hu := range []struct {
				h    *testrack.Host
				unit string
			}{{server, "k3s"}, {agent, "k3s-agent"}, {intruder, "k3s-agent"}, {intruder, "k3s"}} {
				t.Logf("%s %s log:\n%s", hu.h.Name, hu.unit, UnitLog(context.Background(), hu.h, hu.unit))
			}
		}
	})
	if got := mustExec(t, server, "k3s --version | head -1"); got != "k3s version "+DefaultVersion+" (fake0000)" {
		t.Errorf("k3s --version on the host: %q", got)
	}

	// The first server, as rack would set it up.
	writeFile(t, server, "/etc/rancher/k3s/config.yaml", 0o600, fmt.Sprintf(`token: %s
cluster-init: true
write-kubeconfig-mode: "0644"
tls-san:
  - %s
node-label:
  - rack.example/shelf=1
disable:
  - servicelb
some-future-flag: kept
`, clusterToken, server.Addr))
	writeFile(t, server, "/etc/systemd/system/k3s.service", 0o644, k3sUnitFor("server"))
	mustExec(t, server, "systemctl daemon-reload && systemctl enable --now k3s")

	srvNode := waitNodeReady(t, ctx, cs, server.Name)
	checkLabels(t, srvNode, map[string]string{
		"kubernetes.io/arch":                    "amd64",
		"kubernetes.io/os":                      "linux",
		"kubernetes.io/hostname":                server.Name,
		"node-role.kubernetes.io/control-plane": "true",
		"node-role.kubernetes.io/master":        "true",
		"node-role.kubernetes.io/etcd":          "true",
		"rack.example/shelf":                    "1",
	})
	if v := srvNode.Status.NodeInfo.KubeletVersion; v != DefaultVersion {
		t.Errorf("server kubelet version %q, want %s", v, DefaultVersion)
	}
	if ip := internalIP(srvNode); ip != server.Addr {
		t.Errorf("server InternalIP %q, want %s", ip, server.Addr)
	}

	t.Run("server files", func(t *testing.T) {
		sum := sha256.Sum256([]byte(c.CAPEM))
		wantToken := "K10" + hex.EncodeToString(sum[:]) + "::server:" + clusterToken
		if got := mustExec(t, server, "stat -c %a /var/lib/rancher/k3s/server/node-token && cat /var/lib/rancher/k3s/server/node-token"); got != "600\n"+wantToken {
			t.Errorf("node-token: %q, want mode 600 and %q", got, wantToken)
		}
		kc := mustExec(t, server, "stat -c %a /etc/rancher/k3s/k3s.yaml && cat /etc/rancher/k3s/k3s.yaml")
		if !strings.HasPrefix(kc, "644\n") || !strings.Contains(kc, "server: https://127.0.0.1:6443") {
			t.Errorf("k3s.yaml (mode, content): %s", kc)
		}
		// The token is in neither the log nor any process's arguments.
		if log := UnitLog(ctx, server, "k3s"); strings.Contains(log, clusterToken) {
			t.Errorf("the token appears in the k3s log:\n%s", log)
		}
		if strings.Contains(mustExec(t, server, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '"), clusterToken) {
			t.Error("the token appears in a process's arguments")
		}
		if log := UnitLog(ctx, server, "k3s"); !strings.Contains(log, "some-future-flag") {
			t.Errorf("an unknown config key is not reported:\n%s", log)
		}
	})

	t.Run("apiserver through the server's address", func(t *testing.T) {
		got := httpsVersion(t, []byte(c.CAPEM), "https://"+server.Addr+":6443/version")
		if got != "v1.36.4" {
			t.Errorf("https://%s:6443/version: gitVersion %q", server.Addr, got)
		}
	})

	// An agent on the Pi joins with the server's node-token, like rack.
	nodeToken := mustExec(t, server, "cat /var/lib/rancher/k3s/server/node-token")
	writeFile(t, agent, "/etc/rancher/k3s/config.yaml", 0o600, fmt.Sprintf(`server: https://%s:6443
token: %s
node-name: pi-agent
node-label: [rack.example/shelf=2, rack.example/disk=ssd]
node-taint:
  - dedicated=storage:NoSchedule
`, server.Addr, nodeToken))
	writeFile(t, agent, "/etc/systemd/system/k3s-agent.service", 0o644, k3sUnitFor("agent"))
	mustExec(t, agent, "systemctl enable --now k3s-agent")
	agentNode := waitNodeReady(t, ctx, cs, "pi-agent")
	checkLabels(t, agentNode, map[string]string{
		"kubernetes.io/arch":     "arm64",
		"kubernetes.io/hostname": "pi-agent",
		"rack.example/shelf":     "2",
		"rack.example/disk":      "ssd",
	})
	if _, ok := agentNode.Labels["node-role.kubernetes.io/control-plane"]; ok {
		t.Error("the agent carries the control-plane role")
	}
	if !hasTaint(agentNode, "dedicated", "storage", corev1.TaintEffectNoSchedule) {
		t.Errorf("agent taints %v lack dedicated=storage:NoSchedule", agentNode.Spec.Taints)
	}
	if v := agentNode.Status.NodeInfo.KubeletVersion; v != DefaultVersion {
		t.Errorf("agent kubelet version %q", v)
	}
	if a := agentNode.Status.NodeInfo.Architecture; a != "arm64" {
		t.Errorf("agent nodeInfo.architecture %q", a)
	}

	t.Run("wrong token never joins", func(t *testing.T) {
		// The token through the environment file, as k3s's installer does.
		writeFile(t, intruder, "/etc/systemd/system/k3s-agent.service.env", 0o600, "K3S_TOKEN='not-the-token'\n")
		writeFile(t, intruder, "/etc/rancher/k3s/config.yaml", 0o600, fmt.Sprintf("server: https://%s:6443\nnode-name: intruder\n", server.Addr))
		writeFile(t, intruder, "/etc/systemd/system/k3s-agent.service", 0o644, k3sUnitFor("agent"))
		out, code := exec1(t, intruder, "systemctl enable --now k3s-agent")
		if code == 0 {
			t.Errorf("enable --now k3s-agent with a wrong token succeeded: %s", out)
		}
		log := UnitLog(ctx, intruder, "k3s-agent")
		if !strings.Contains(log, "token rejected") || !strings.Contains(log, "level=fatal") {
			t.Errorf("the agent's log does not say why it failed:\n%s", log)
		}
		if strings.Contains(log, "not-the-token") {
			t.Errorf("the agent logs its token:\n%s", log)
		}
		// Restart=always keeps trying (and failing) every 5 s.
		time.Sleep(6 * time.Second)
		if _, err := cs.CoreV1().Nodes().Get(ctx, "intruder", metav1.GetOptions{}); err == nil {
			t.Error("the agent with a wrong token registered its Node")
		}
	})

	// Like k3s (and its kubelet), node-label and node-taint take effect only
	// when the Node is first registered: a restart with changed values leaves
	// the Node's labels and taints as they were.
	t.Run("restart does not apply label or taint changes", func(t *testing.T) {
		mustExec(t, server, `sed -i 's#rack.example/shelf=1#rack.example/shelf=7#' /etc/rancher/k3s/config.yaml &&
printf 'node-taint:\n  - maintenance=true:PreferNoSchedule\n' >> /etc/rancher/k3s/config.yaml &&
systemctl restart k3s`)
		n, err := cs.CoreV1().Nodes().Get(ctx, server.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Labels["rack.example/shelf"] != "1" {
			t.Errorf("label after restart: %q, want the registered 1", n.Labels["rack.example/shelf"])
		}
		if hasTaint(n, "maintenance", "true", corev1.TaintEffectPreferNoSchedule) {
			t.Errorf("taints after restart: %v: a registered Node keeps its taints", n.Spec.Taints)
		}
		if got, _ := Starts(ctx, server, "k3s"); got != 2 {
			t.Errorf("k3s starts: %d, want 2", got)
		}
	})

	// The kubelet refuses to start with a label it may not set on itself
	// (NodeRestriction's set), and k3s with it.
	t.Run("restricted node label stops the agent", func(t *testing.T) {
		out, err := agent.Exec(ctx, `k3s agent --server https://127.0.0.1:1 --token x --node-name probe --node-label node-role.kubernetes.io/worker=true 2>&1; echo "exit $?"`)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [node-role.kubernetes.io/worker]") || !strings.Contains(string(out), "exit 1") {
			t.Errorf("k3s agent with node-role.kubernetes.io/worker: %s", out)
		}
	})

	t.Run("reboot", func(t *testing.T) {
		mustExec(t, server, "systemctl reboot")
		testenv.WaitFor(t, ctx, "boot counter 1", func() (bool, string) {
			n, err := Boots(ctx, server)
			return n == 1, strconv.Itoa(n) + errString(err)
		})
		testenv.WaitFor(t, ctx, "sshd back", func() (bool, string) {
			err := sshBanner(server.Addr)
			return err == nil, errString(err)
		})
		testenv.WaitFor(t, ctx, "k3s active again", func() (bool, string) {
			out, code := exec1(t, server, "systemctl is-active k3s")
			return code == 0, out
		})
		if got, _ := Starts(ctx, server, "k3s"); got != 3 {
			t.Errorf("k3s starts after reboot: %d, want 3", got)
		}
		// The API server restarted with the host: anonymous /version is
		// allowed once its authorizer has read the RBAC bindings again.
		testenv.WaitFor(t, ctx, "the API server back", func() (bool, string) {
			got := httpsVersion(t, []byte(c.CAPEM), "https://"+server.Addr+":6443/version")
			return got == "v1.36.4", got
		})
		// The agent still reaches the cluster through the server.
		mustExec(t, agent, "systemctl restart k3s-agent")
	})

	// k3s' managed etcd controllers: each server names its etcd member on
	// its Node, every server keeps the member controller's finalizer on
	// servers' Nodes, and deleting a server's Node removes its member first.
	t.Run("deleting a server's Node removes its etcd member", func(t *testing.T) {
		second := intruder
		mustExec(t, second, "systemctl disable --now k3s-agent && rm -f /etc/systemd/system/k3s-agent.service.env")
		writeFile(t, second, "/etc/rancher/k3s/config.yaml", 0o600, fmt.Sprintf("server: https://%s:6443\ntoken: %s\n", server.Addr, clusterToken))
		writeFile(t, second, "/etc/systemd/system/k3s.service", 0o644, k3sUnitFor("server"))
		mustExec(t, second, "systemctl daemon-reload && systemctl enable --now --no-block k3s")
		t.Cleanup(func() { _, _ = exec1(t, second, "systemctl disable --now k3s") })
		waitNodeReady(t, ctx, cs, second.Name)
		etcdctl := func(args string) string {
			return mustExec(t, server, c.Bin.Etcdctl+" --endpoints http://127.0.0.1:2379 "+args)
		}
		members := func() string { return etcdctl("member list") }
		for _, h := range []*testrack.Host{server, second} {
			testenv.WaitFor(t, ctx, h.Name+"'s Node annotated and finalized", func() (bool, string) {
				n, err := cs.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				return n.Annotations["etcd.k3s.cattle.io/node-name"] == h.Name && n.Annotations["etcd.k3s.cattle.io/node-address"] == h.Addr &&
					slices.Contains(n.Finalizers, "wrangler.cattle.io/managed-etcd-controller"), fmt.Sprint(n.Annotations, n.Finalizers)
			})
		}
		// The agent's Node gets the finalizer too (wrangler's OnRemove holds
		// every Node), but names no member.
		testenv.WaitFor(t, ctx, "pi-agent's finalizer", func() (bool, string) {
			n, err := cs.CoreV1().Nodes().Get(ctx, "pi-agent", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return slices.Contains(n.Finalizers, "wrangler.cattle.io/managed-etcd-controller") && n.Annotations["etcd.k3s.cattle.io/node-name"] == "", fmt.Sprint(n.Annotations, n.Finalizers)
		})

		// A member that has not started yet has no name in etcd: the
		// deletion of a Node naming it leaves it be.
		etcdctl("member add late --peer-urls=http://127.0.0.2:2380")
		late := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "late",
			Labels:      map[string]string{"node-role.kubernetes.io/etcd": "true"},
			Annotations: map[string]string{"etcd.k3s.cattle.io/node-name": "late", "etcd.k3s.cattle.io/node-address": "127.0.0.2"}}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, late, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, ctx, "late's Node finalized", func() (bool, string) {
			n, err := cs.CoreV1().Nodes().Get(ctx, "late", metav1.GetOptions{})
			return err == nil && len(n.Finalizers) > 0, fmt.Sprint(err)
		})
		if err := cs.CoreV1().Nodes().Delete(ctx, "late", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, ctx, "late's Node gone", func() (bool, string) {
			_, err := cs.CoreV1().Nodes().Get(ctx, "late", metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		m := members()
		var lateID string
		for _, line := range strings.Split(m, "\n") {
			if strings.Contains(line, "http://127.0.0.2:2380") {
				lateID, _, _ = strings.Cut(line, ",")
			}
		}
		if lateID == "" {
			t.Fatalf("the unstarted member was removed:\n%s", m)
		}
		etcdctl("member remove " + lateID)

		if err := cs.CoreV1().Nodes().Delete(ctx, second.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, ctx, second.Name+"'s Node and member gone", func() (bool, string) {
			_, err := cs.CoreV1().Nodes().Get(ctx, second.Name, metav1.GetOptions{})
			m := members()
			return apierrors.IsNotFound(err) && !strings.Contains(m, ", "+second.Name+", "), fmt.Sprint(err, "\n", m)
		})
		if m := members(); strings.Count(m, "\n") != 0 || !strings.Contains(m, ", "+server.Name+", ") {
			t.Errorf("etcd members left:\n%s", m)
		}
	})
}

func writeFile(t *testing.T, h *testrack.Host, path string, mode os.FileMode, content string) {
	t.Helper()
	if err := h.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func waitNodeReady(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) *corev1.Node {
	t.Helper()
	var node *corev1.Node
	testenv.WaitFor(t, ctx, "node "+name+" Ready", func() (bool, string) {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		node = n
		return kube.NodeReady(n), fmt.Sprint(n.Status.Conditions)
	})
	return node
}

func checkLabels(t *testing.T, n *corev1.Node, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got, ok := n.Labels[k]; !ok || got != v {
			t.Errorf("node %s: label %s=%q, want %q", n.Name, k, got, v)
		}
	}
}

func hasTaint(n *corev1.Node, key, value string, effect corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Value == value && t.Effect == effect {
			return true
		}
	}
	return false
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// httpsVersion GETs a /version URL verifying TLS with the cluster CA only
// (no client certificate: /version is public) and returns gitVersion.
func httpsVersion(t *testing.T, caPEM []byte, url string) string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url)
	if err != nil {
		// Not up yet (or slow on a loaded machine): the caller waits.
		t.Logf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v struct{ GitVersion string }
	if err := json.Unmarshal(b, &v); err != nil || v.GitVersion == "" {
		t.Logf("GET %s: %s: %s %v", url, resp.Status, b, err)
	}
	return v.GitVersion
}

// clientset is an admin client of the API server at url.
func clientset(t *testing.T, url string, c *cpfile.ControlPlane) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: url, TLSClientConfig: rest.TLSClientConfig{
		CAData: []byte(c.CAPEM), CertData: []byte(c.CertPEM), KeyData: []byte(c.KeyPEM)}})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// installOn readies r's hosts for the fake k3s: a control plane whose
// servers run on them (kwok, on this machine, keeps their Nodes Ready and
// talks to server's API), the init system and the k3s binary on every
// host. It returns the control plane and a client for server's API.
func installOn(ctx context.Context, t *testing.T, r *testrack.Rack, server *testrack.Host) (*cpfile.ControlPlane, *kubernetes.Clientset) {
	t.Helper()
	bins, err := testcluster.FindBinaries(ctx, t.Logf)
	if err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	c, err := NewControlPlane(bins)
	if err != nil {
		t.Fatal(err)
	}
	apiURL := "https://" + server.Addr + ":6443"
	kw, err := testcluster.RunKwok(bins, t.TempDir(), apiURL, []byte(c.CAPEM), []byte(c.CertPEM), []byte(c.KeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kw.Stop)
	cs := clientset(t, apiURL, c)
	bin, err := os.ReadFile(Build(t, DefaultVersion))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range r.Hosts {
		if err := InstallInit(ctx, h); err != nil {
			t.Fatal(err)
		}
		if err := WriteControlPlane(h, c); err != nil {
			t.Fatal(err)
		}
		if err := h.WriteFile("/usr/local/bin/k3s", bin, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return c, cs
}
