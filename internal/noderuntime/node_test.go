package noderuntime_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/util/podutils"

	"github.com/homelab/rack/internal/images"
	"github.com/homelab/rack/internal/noderuntime"
	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/internal/testrack"
)

// realNode is a node runtime running in a test host, started by racknode.
type realNode struct {
	host *testrack.Host
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
	cfg  string // config path inside the host
	// racknode is the binary's path (visible in the host).
	racknode string
}

// lab is a control plane plus test hosts with real kubelets.
type lab struct {
	cluster  *testcluster.Cluster
	cs       *kubernetes.Clientset
	rack     *testrack.Rack
	nodes    []*realNode
	racknode string
}

func TestRealNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "noderuntime: real nodes need root (running as uid %d)", os.Geteuid())
	}
	if testing.Short() {
		t.Skip("noderuntime: real nodes take minutes; skipped in short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	if err := noderuntime.EnsurePackages(ctx); err != nil {
		testenv.SkipOrFail(t, "noderuntime: %v", err)
	}
	l := startLab(t, ctx, 3)
	cs := l.cs

	t.Run("nodes are Ready by real kubelets", func(t *testing.T) {
		for _, n := range l.nodes {
			nd := waitNodeReady(t, ctx, cs, n.name)
			info := nd.Status.NodeInfo
			t.Logf("node %s Ready: kubelet %s, runtime %s, podCIDR %s, addresses %v",
				nd.Name, info.KubeletVersion, info.ContainerRuntimeVersion, nd.Spec.PodCIDR, nd.Status.Addresses)
			// kwok fills none of these: only a kubelet talking to containerd does.
			if !strings.HasPrefix(info.ContainerRuntimeVersion, "containerd://1.6") {
				t.Errorf("node %s: container runtime %q, want containerd://1.6.x", nd.Name, info.ContainerRuntimeVersion)
			}
			if nd.Labels[noderuntime.RealKubeletLabel] != "real" || nd.Labels["rack.test/role"] != "web" {
				t.Errorf("node %s: labels %v", nd.Name, nd.Labels)
			}
		}
	})

	t.Run("NodeRestriction applies to the kubelet's identity", func(t *testing.T) {
		cert, key, err := l.cluster.ClientCert("system:node:"+l.nodes[0].name, "system:nodes")
		if err != nil {
			t.Fatal(err)
		}
		cfg := l.cluster.RESTConfig()
		cfg.CertData, cfg.KeyData = cert, key
		asNode, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		patch := []byte(`{"metadata":{"labels":{"rack.test/stolen":"yes"}}}`)
		_, err = asNode.CoreV1().Nodes().Patch(ctx, l.nodes[1].name, types.MergePatchType, patch, metav1.PatchOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("node %s labelling node %s: err %v, want Forbidden", l.nodes[0].name, l.nodes[1].name, err)
		}
	})

	// The sample server on nodes 0 and 1 only, one pod each; node 2 is
	// the client that has no pod of its own.
	web := l.nodes[:2]
	deploySampleWeb(t, ctx, cs, "web", 2, []string{web[0].name, web[1].name}, nil)
	pods := waitPodsReady(t, ctx, cs, "app=web", 2)

	t.Run("probes really probe", func(t *testing.T) {
		for _, p := range pods {
			started := p.Status.ContainerStatuses[0].State.Running.StartedAt.Time
			var ready time.Time
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady {
					ready = c.LastTransitionTime.Time
				}
			}
			// The server answers /ready with 503 for its first 3 s.
			if d := ready.Sub(started); d < 2*time.Second {
				t.Errorf("pod %s Ready %v after start, before its 3 s ready delay: readiness was not probed", p.Name, d)
			} else {
				t.Logf("pod %s on %s (%s) Running, Ready %v after start", p.Name, p.Spec.NodeName, p.Status.PodIP, d)
			}
		}
		// A server that never becomes ready runs but never turns Ready,
		// and no Service sends it traffic.
		deploySampleWeb(t, ctx, cs, "never", 1, []string{web[0].name}, []corev1.EnvVar{{Name: "SAMPLEWEB_NEVER_READY", Value: "true"}})
		never := waitPodsRunning(t, ctx, cs, "app=never", 1)[0]
		time.Sleep(8 * time.Second)
		p, err := cs.CoreV1().Pods("default").Get(ctx, never.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if podutils.IsPodReady(p) || p.Status.Phase != corev1.PodRunning {
			t.Errorf("never-ready pod: phase %s, ready %v; want Running and not Ready", p.Status.Phase, podutils.IsPodReady(p))
		}
		events, _ := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + never.Name})
		probed := false
		for _, e := range events.Items {
			if e.Reason == "Unhealthy" && strings.Contains(e.Message, "Readiness probe failed: HTTP probe failed with statuscode: 503") {
				probed = true
				t.Logf("kubelet event: %s %s (x%d)", e.Reason, e.Message, e.Count)
			}
		}
		if !probed {
			t.Error("no 'Readiness probe failed … 503' event for the never-ready pod")
		}
	})

	svc := createService(t, ctx, cs, "web")
	t.Run("Service answers from another node through kube-proxy", func(t *testing.T) {
		client := l.nodes[2]
		url := "http://" + svc.Spec.ClusterIP + "/"
		seen := map[string]int{}
		for i := 0; i < 20; i++ {
			out, err := l.get(ctx, client, url)
			if err != nil {
				t.Fatalf("from %s: %v", client.name, err)
			}
			var ans struct{ Version, Host string }
			if err := json.Unmarshal([]byte(strings.TrimPrefix(out, "200 ")), &ans); err != nil || ans.Version != "v1" {
				t.Fatalf("from %s GET %s = %q", client.name, url, out)
			}
			seen[ans.Host]++
		}
		t.Logf("from node %s, GET %s answered by %v", client.name, url, seen)
		if len(seen) != 2 {
			t.Errorf("answers came from %v, want both pods", seen)
		}
	})

	t.Run("a pod on node A reaches a pod on node B", func(t *testing.T) {
		var a, b corev1.Pod
		for _, p := range pods {
			if p.Spec.NodeName == web[0].name {
				a = p
			} else {
				b = p
			}
		}
		// Ask pod A (from its own node) to fetch from pod B's address.
		url := fmt.Sprintf("http://%s:8080/fetch?url=http://%s:8080/", a.Status.PodIP, b.Status.PodIP)
		out, err := l.get(ctx, web[0], url)
		if err != nil || !strings.HasPrefix(out, "200 ") || !strings.Contains(out, b.Name) {
			t.Fatalf("pod %s (%s) fetching from pod %s (%s): %q %v", a.Name, a.Spec.NodeName, b.Name, b.Spec.NodeName, out, err)
		}
		t.Logf("pod %s on %s -> pod %s on %s: %s", a.Name, a.Spec.NodeName, b.Name, b.Spec.NodeName, strings.TrimSpace(out))
		// And the Service and the API server, from inside a pod.
		out, err = l.get(ctx, web[0], fmt.Sprintf("http://%s:8080/fetch?url=http://%s/", a.Status.PodIP, svc.Spec.ClusterIP))
		if err != nil || !strings.Contains(out, `\"version\":\"v1\"`) {
			t.Errorf("pod %s -> Service %s: %q %v", a.Name, svc.Spec.ClusterIP, out, err)
		}
		out, err = l.get(ctx, web[0], fmt.Sprintf("http://%s:8080/fetch?insecure=1&url=https://%s/livez", a.Status.PodIP, testcluster.ServiceIP))
		if err != nil || !strings.Contains(out, `"status":`) {
			t.Errorf("pod %s -> kubernetes Service %s: %q %v", a.Name, testcluster.ServiceIP, out, err)
		} else {
			t.Logf("pod %s -> https://%s/livez: %s", a.Name, testcluster.ServiceIP, strings.TrimSpace(out))
		}
	})

	t.Run("a restarted node keeps its pods, as k3s does", func(t *testing.T) {
		n := l.nodes[0]
		var pod corev1.Pod
		for _, p := range pods {
			if p.Spec.NodeName == n.name {
				pod = p
			}
		}
		n.terminate(t)
		// containerd, kubelet and kube-proxy are gone; the pod is not.
		out, err := l.get(ctx, n, "http://"+pod.Status.PodIP+":8080/healthz")
		if err != nil || !strings.HasPrefix(out, "200 ") {
			t.Fatalf("pod %s while its node is stopped: %q %v", pod.Name, out, err)
		}
		if err := n.start(t, ctx); err != nil {
			t.Fatal(err)
		}
		waitNodeReady(t, ctx, cs, n.name)
		p := waitPodsReady(t, ctx, cs, "app=web", 2)
		for _, q := range p {
			if q.Spec.NodeName == n.name && (q.UID != pod.UID || q.Status.ContainerStatuses[0].RestartCount != 0) {
				t.Errorf("after the restart: pod %s uid %s restarts %d; want %s still running", q.Name, q.UID, q.Status.ContainerStatuses[0].RestartCount, pod.UID)
			}
		}
		t.Logf("pod %s kept running through a restart of node %s", pod.Name, n.name)
	})

	t.Run("the API server calls a webhook Service served by a pod", func(t *testing.T) {
		testWebhook(t, ctx, l)
	})
}

// startLab starts hosts, a control plane whose kwok leaves real nodes
// alone, and a real node in each host.
func startLab(t *testing.T, ctx context.Context, hosts int) *lab {
	bins, err := testcluster.FindBinaries(ctx, t.Logf)
	if err != nil {
		testenv.SkipOrFail(t, "noderuntime: %v", err)
	}
	binDir := filepath.Dir(bins.APIServer)
	kubelet, proxy := filepath.Join(binDir, "kubelet"), filepath.Join(binDir, "kube-proxy")
	for _, b := range []string{kubelet, proxy} {
		if _, err := os.Stat(b); err != nil {
			testenv.SkipOrFail(t, "noderuntime: %v (scripts/build-controlplane.sh builds it)", err)
		}
	}
	set, err := images.Find(ctx, t.Logf)
	if err != nil {
		testenv.SkipOrFail(t, "noderuntime: %v", err)
	}
	set, err = set.Only(images.PauseRef, images.SampleWebRef("v1"))
	if err != nil {
		t.Fatal(err)
	}
	// kwok must not fight the kubelets: it keeps only the Nodes without
	// the real-kubelet label. And the API server runs NodeRestriction, as
	// k3s's does. (Both belong in testcluster; see the report.)
	dir := t.TempDir()
	bins.Kwok = wrap(t, dir, bins.Kwok, "--manage-all-nodes=true", "--manage-nodes-with-label-selector=!"+noderuntime.RealKubeletLabel)
	// --enable-aggregator-routing: webhooks (and aggregated APIs) are called
	// at an endpoint's pod address, which the root namespace routes to its
	// node, instead of at the Service's cluster IP, which it blackholes.
	bins.APIServer = wrap(t, dir, bins.APIServer, "--v=0", "--v=0 --enable-admission-plugins=NodeRestriction --enable-aggregator-routing=true")

	rack := testrack.New(t, hosts)
	var sans []string
	for _, h := range rack.Hosts {
		sans = append(sans, h.Addr)
	}
	cluster := testcluster.New(t, testcluster.WithBindAddress(testrack.BridgeAddr), testcluster.WithSANs(sans...),
		testcluster.WithOptions(func(o *testcluster.Options) { o.Binaries = &bins }))
	// Every call bounded: a stalled API server must fail the test, not hang it.
	rc := cluster.RESTConfig()
	rc.Timeout = 30 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{cluster: cluster, cs: cs, rack: rack, racknode: buildRacknode(t, ctx)}
	for _, h := range rack.Hosts {
		n, err := l.startNode(t, ctx, h, kubelet, proxy, set)
		if err != nil {
			t.Fatal(err)
		}
		l.nodes = append(l.nodes, n)
	}
	return l
}

// wrap writes a script that runs bin with the argument from replaced by
// to (split on spaces).
func wrap(t *testing.T, dir, bin, from, to string) string {
	path := filepath.Join(dir, filepath.Base(bin))
	var repl strings.Builder
	for _, a := range strings.Fields(to) {
		fmt.Fprintf(&repl, " '%s'", a)
	}
	script := fmt.Sprintf("#!/bin/sh\nfor a; do shift; case \"$a\" in '%s') set -- \"$@\"%s;; *) set -- \"$@\" \"$a\";; esac; done\nexec %s \"$@\"\n",
		from, repl.String(), bin)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// buildRacknode builds cmd/racknode where test hosts see it (their /tmp
// is private, the source tree is not), cached by its sources so crashed
// runs leave nothing new behind.
func buildRacknode(t *testing.T, ctx context.Context) string {
	root, err := testcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var files []string
	for _, dir := range []string{"internal/noderuntime", "internal/flock"} {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
				files = append(files, p)
			}
			return nil
		})
	}
	files = append(files, filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum"))
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "%s", runtime.Version())
	cache := os.Getenv("CACHE_DIR")
	if cache == "" {
		cache = filepath.Join(root, ".cache")
	}
	bin := filepath.Join(cache, "noderuntime", "racknode-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := bin + ".tmp" + strconv.Itoa(os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", tmp, "./internal/noderuntime/cmd/racknode")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building racknode: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	// Every source change makes a new one: drop those of yesterday.
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(bin), "racknode-*"))
	for _, o := range old {
		if st, err := os.Stat(o); err == nil && o != bin && time.Since(st.ModTime()) > 24*time.Hour {
			_ = os.Remove(o)
		}
	}
	return bin
}

func (l *lab) startNode(t *testing.T, ctx context.Context, h *testrack.Host, kubelet, proxy string, set images.Set) (*realNode, error) {
	name := h.Name
	var tars []string
	for _, img := range set.Images {
		tars = append(tars, img.Tar)
	}
	cfg := noderuntime.Config{
		NodeName: name, NodeIP: h.Addr, APIServer: l.cluster.URL, CAPEM: l.cluster.CAPEM,
		Labels:  map[string]string{"rack.test/role": "web"},
		Kubelet: kubelet, KubeProxy: proxy, Images: tars,
	}
	// Certificates as a k3s server issues them: through the certificates
	// API, with admin credentials only (what the fake k3s has).
	admin := noderuntime.Admin{URL: l.cluster.URL, CAPEM: l.cluster.CAPEM, CertPEM: l.cluster.AdminCertPEM, KeyPEM: l.cluster.AdminKeyPEM}
	if err := noderuntime.NodeCerts(ctx, admin, &cfg); err != nil {
		return nil, err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	n := &realNode{host: h, name: name, cfg: "/etc/rancher/racknode.json", racknode: l.racknode,
		log: filepath.Join(t.TempDir(), "racknode.log")}
	if err := h.WriteFile(n.cfg, b, 0o600); err != nil {
		return nil, err
	}
	t.Cleanup(func() { n.stop(t) })
	return n, n.start(t, ctx)
}

// start runs racknode with -keep-pods: SIGTERM then stops the processes
// only, like `systemctl stop k3s`; stop() removes the rest with
// `racknode killall`, like k3s-killall.sh.
func (n *realNode) start(t *testing.T, ctx context.Context) error {
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	n.done = make(chan struct{})
	n.cmd = exec.Command("nsenter", "--target", strconv.Itoa(n.host.HolderPid()), "--mount", "--net", "--uts", "--",
		n.racknode, "run", "-keep-pods", "-config", n.cfg)
	n.cmd.Stderr = logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return err
	}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := n.done
	go func() { _ = n.cmd.Wait(); logf.Close(); close(done) }()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready ") {
				ready <- sc.Text()
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		t.Logf("node %s (%s): %s", n.name, n.host.Addr, line)
		return nil
	case <-done:
		return fmt.Errorf("racknode on %s exited:\n%s", n.name, n.tail())
	case <-time.After(4 * time.Minute):
		return fmt.Errorf("racknode on %s not ready after 4 minutes:\n%s", n.name, n.tail())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// terminate sends SIGTERM and waits for racknode to exit.
func (n *realNode) terminate(t *testing.T) {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(90 * time.Second):
		t.Errorf("racknode %s ignores SIGTERM; killing it", n.name)
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	if code := n.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("racknode %s exited %d:\n%s", n.name, code, n.tail())
	}
}

func (n *realNode) tail() string {
	b, _ := os.ReadFile(n.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// stop ends racknode, removes everything of the node with `racknode
// killall` and checks that nothing of it is left on the machine.
func (n *realNode) stop(t *testing.T) {
	if t.Failed() {
		t.Logf("racknode %s log:\n%s", n.name, n.tail())
		for _, c := range []string{"kubelet", "containerd", "kube-proxy"} {
			out, err := n.host.Exec(context.Background(), "tail -n 25 "+noderuntime.DefaultDataDir+"/logs/"+c+".log")
			t.Logf("%s %s: %v\n%s", n.name, c, err, out)
		}
		out, err := n.host.Exec(context.Background(), "ip route; ip -br addr; iptables-save | grep -v '^#' | head -80")
		t.Logf("%s network: %v\n%s", n.name, err, out)
	}
	n.terminate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := n.host.Exec(ctx, n.racknode+" killall -config "+n.cfg); err != nil {
		t.Errorf("racknode killall on %s: %v %s", n.name, err, out)
	}
	cg := "/sys/fs/cgroup/memory/" + noderuntime.CgroupPrefix + n.name
	if _, err := os.Stat(cg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind (%v)", cg, err)
	}
	left, err := n.host.Exec(ctx, `ip link show cni0 >/dev/null 2>&1 && echo "link cni0"
iptables-save | grep -E '^:(KUBE|CNI|RACK)-' | head -3
grep -E ' (/run/k3s|/var/lib/kubelet|/run/containerd) ' /proc/self/mountinfo | head -3
true`)
	if err != nil || strings.TrimSpace(string(left)) != "" {
		t.Errorf("%s after killall: left behind: %q %v", n.name, left, err)
	}
}

func (l *lab) get(ctx context.Context, n *realNode, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := n.host.Exec(ctx, l.racknode+" get '"+url+"'")
	return string(out), err
}

func waitNodeReady(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) *corev1.Node {
	t.Helper()
	var last string
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		nd, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, c := range nd.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						return nd
					}
					last = c.Reason + ": " + c.Message
				}
			}
		} else {
			last = err.Error()
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("node %s not Ready after 3 minutes: %s", name, last)
	return nil
}

func deploySampleWeb(t *testing.T, ctx context.Context, cs kubernetes.Interface, app string, replicas int32, nodes []string, env []corev1.EnvVar, mods ...func(*appsv1.Deployment)) {
	t.Helper()
	labels := map[string]string{"app": app}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(8080)}},
			PeriodSeconds: 1, FailureThreshold: 3,
		}
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: &corev1.Affinity{
						NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
							NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
								Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: nodes,
							}}}},
						}},
						PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels}, TopologyKey: "kubernetes.io/hostname",
						}}},
					},
					Containers: []corev1.Container{{
						Name:            "web",
						Image:           "docker.io/homelab/sampleweb:v1",
						ImagePullPolicy: corev1.PullIfNotPresent,
						Env:             append([]corev1.EnvVar{{Name: "SAMPLEWEB_READY_DELAY", Value: "3s"}}, env...),
						Ports:           []corev1.ContainerPort{{ContainerPort: 8080}},
						LivenessProbe:   probe("/healthz"),
						ReadinessProbe:  probe("/ready"),
					}},
				},
			},
		},
	}
	for _, m := range mods {
		m(d)
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createService(t *testing.T, ctx context.Context, cs kubernetes.Interface, app string, ports ...corev1.ServicePort) *corev1.Service {
	t.Helper()
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}
	}
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": app},
			Ports:    ports,
		},
	}
	s, err := cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// kube-proxy syncs within a second of the EndpointSlice; wait for it.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		sl, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + app})
		if err == nil && len(sl.Items) > 0 && len(sl.Items[0].Endpoints) > 0 {
			time.Sleep(2 * time.Second)
			return s
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("service %s has no endpoints", app)
	return nil
}

func waitPods(t *testing.T, ctx context.Context, cs kubernetes.Interface, selector string, n int, ok func(*corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil {
			var good []corev1.Pod
			var states []string
			for i := range l.Items {
				p := &l.Items[i]
				if ok(p) {
					good = append(good, *p)
				}
				states = append(states, fmt.Sprintf("%s on %s: %s ready=%v %s", p.Name, p.Spec.NodeName, p.Status.Phase, podutils.IsPodReady(p), waitingReason(p)))
			}
			if len(good) == n {
				return good
			}
			last = strings.Join(states, "; ")
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("pods %s: want %d, have %s", selector, n, last)
	return nil
}

func waitingReason(p *corev1.Pod) string {
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting != nil {
			return s.State.Waiting.Reason + " " + s.State.Waiting.Message
		}
	}
	return ""
}

func waitPodsReady(t *testing.T, ctx context.Context, cs kubernetes.Interface, selector string, n int) []corev1.Pod {
	return waitPods(t, ctx, cs, selector, n, podutils.IsPodReady)
}

func waitPodsRunning(t *testing.T, ctx context.Context, cs kubernetes.Interface, selector string, n int) []corev1.Pod {
	return waitPods(t, ctx, cs, selector, n, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
}
