package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/apptest"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/stacks"
)

// pulumiForApps puts the pulumi CLI that scripts/build-pulumi.sh builds
// first on PATH, with a PULUMI_HOME of the test's own holding the
// kubernetes plugin scripts/build-provider.sh builds (as stacks' tests do).
func pulumiForApps(t *testing.T) string {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		testenv.SkipOrFail(t, "the apps stack tests build the pulumi CLI and run as root on CI (uid %d)", uid)
	}
	path, home, err := pulumiEnv(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", path+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("PULUMI_HOME", home)
	return home
}

// pulumiEnv builds (or finds cached) the pulumi CLI and the kubernetes
// plugin; it returns the CLI's folder for PATH and a PULUMI_HOME under dir
// holding the plugin.
func pulumiEnv(t testing.TB, dir string) (path, home string, err error) {
	root, err := testcluster.RepoRoot()
	if err != nil {
		return "", "", err
	}
	tool := func(script string) (string, error) {
		cmd := exec.Command(filepath.Join(root, "scripts", script))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("scripts/%s: %w", script, err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return lines[len(lines)-1], nil
	}
	if path, err = tool("build-pulumi.sh"); err != nil {
		return "", "", err
	}
	provider, err := tool("build-provider.sh")
	if err != nil {
		return "", "", err
	}
	home = filepath.Join(dir, "pulumi-home")
	name := "resource-kubernetes-v" + stacks.KubernetesPluginVersion
	if err := os.MkdirAll(filepath.Join(home, "plugins", name), 0o755); err != nil {
		return "", "", err
	}
	bin := filepath.Join(provider, "plugins", name, "pulumi-resource-kubernetes")
	if err := os.Symlink(bin, filepath.Join(home, "plugins", name, "pulumi-resource-kubernetes")); err != nil {
		return "", "", err
	}
	return path, home, nil
}

// appRack is a test API server (kwok runs the pods: "Running" without
// running) with Traefik's CRDs, one Node, and a stand-in for Traefik: its
// Service, with a LoadBalancer address on loopback where an HTTP server
// answers the app's check path for the preview header, as Traefik routes it
// to the candidate.
type appRack struct {
	cs      kubernetes.Interface
	dyn     dynamic.Interface
	invFile string
	home    string
	check   *int // the status the check path answers
}

const appInventory = `cluster: {name: lab, k3s: {version: v1.33.5+k3s1}}
ssh: {user: pi}
nodes:
  - {name: kwok-1, address: 10.99.0.1, role: server}
addons:
  traefik: {}
apps:
  - name: web
    image: docker.io/homelab/sampleweb:IMAGE
    port: 8080
    replicas: 2
    expose: {host: web.home.arpa}
    strategy: {type: canary, steps: [10, 50, 100], check: /ready}
`

func newAppRack(t *testing.T) *appRack {
	t.Helper()
	home := pulumiForApps(t)
	c := testcluster.New(t)
	ctx := context.Background()
	dyn := apptest.Prepare(ctx, t, c)
	cs := c.Clientset()
	status := http.StatusOK
	r := &appRack{cs: cs, dyn: dyn, home: home, check: &status}
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Host == "web.home.arpa" && req.Header.Get(apps.PreviewHeader) == apps.PreviewValue && req.URL.Path == "/ready" {
			w.WriteHeader(*r.check)
			return
		}
		if req.Host == "web.home.arpa" && strings.HasPrefix(req.URL.Path, apps.MarkerPathPrefix) {
			// Traefik serves every route as soon as it is applied:
			// the routes' markers answer (rack waits for them).
			w.WriteHeader(apps.MarkerStatus)
			return
		}
		http.NotFound(w, req)
	}))
	t.Cleanup(fake.Close)
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(fake.URL, "http://"))
	port, _ := strconv.Atoi(p)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: release.TraefikNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services(release.TraefikNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: release.TraefikService, Namespace: release.TraefikNamespace},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "traefik"},
			Ports: []corev1.ServicePort{{Name: release.TraefikPort, Port: int32(port)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "127.0.0.1"}}
	if _, err := cs.CoreV1().Services(release.TraefikNamespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	r.invFile = filepath.Join(dir, "rack.yaml")
	r.setImage(t, "v1")
	// rack's kubeconfig, as rack up keeps it: a context named after the cluster.
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.CAPEM}
	cfg.AuthInfos["lab"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.AdminCertPEM, ClientKeyData: c.AdminKeyPEM}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "lab"}
	cfg.CurrentContext = "lab"
	kc := filepath.Join(dir, ".rack", "lab", "kubeconfig")
	if err := os.MkdirAll(filepath.Dir(kc), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		t.Fatal(err)
	}
	t.Setenv(stacks.EnvPassphrase, "")
	return r
}

func (r *appRack) setImage(t *testing.T, tag string) {
	t.Helper()
	if err := os.WriteFile(r.invFile, []byte(strings.ReplaceAll(appInventory, "IMAGE", tag)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// up is rack up's apps phase, as rack up calls it after the platform.
func (r *appRack) up(t *testing.T, what string) string {
	t.Helper()
	inv, ps, err := inventory.Load(r.invFile)
	if err != nil || ps.HasErrors() {
		t.Fatalf("inventory: %v %v", err, ps)
	}
	var out, errb bytes.Buffer
	g := &globals{inventory: r.invFile, output: outputText, stdout: &out, stderr: &errb}
	start := time.Now()
	if err := upApps(context.Background(), g, inv, stacks.Options{Kubeconfig: inv.State().Kubeconfig(), PulumiHome: r.home}); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, errb.String())
	}
	t.Logf("%s: %v\n%s", what, time.Since(start).Round(time.Millisecond), out.String())
	return out.String()
}

// appStatus is rack app status NAME -o json, decoded as SPEC says.
func (r *appRack) appStatus(t *testing.T) (map[string]any, int) {
	t.Helper()
	out, errOut, code := rack(t, nil, "-i", r.invFile, "-o", "json", "app", "status", "web")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("rack app status -o json: exit %d, not JSON: %v\n%s\n%s", code, err, out, errOut)
	}
	return st, code
}

func (r *appRack) weights(t *testing.T) map[string]int64 {
	return apptest.Weights(t, r.dyn, "web")
}

func (r *appRack) deployments(t *testing.T) []string {
	return apptest.Deployments(t, r.cs, func(image string) string {
		return strings.TrimPrefix(image, "docker.io/homelab/sampleweb:")
	})
}

func wantStatus(t *testing.T, st map[string]any, want map[string]any) {
	t.Helper()
	for _, k := range []string{"name", "strategy", "stable", "candidate", "step", "active", "weights", "healthy"} {
		if _, ok := st[k]; !ok {
			t.Errorf("rack app status -o json has no %q: %v", k, st)
		}
	}
	for k, v := range want {
		got, _ := json.Marshal(st[k])
		exp, _ := json.Marshal(v)
		if !bytes.Equal(got, exp) {
			t.Errorf("%s = %s, want %s", k, got, exp)
		}
	}
}

// TestAppCommandsForReal: rack up's apps phase, rack app status, promote
// (one step, then --auto through the rest), and a candidate that stops
// being Available: --auto's gate fails, it rolls back and exits 1. The
// apps stack runs through rack's runner with the real engine and provider
// against a real API server; the gates read that API server.
func TestAppCommandsForReal(t *testing.T) {
	r := newAppRack(t)
	const v1, v2, v3 = "docker.io/homelab/sampleweb:v1", "docker.io/homelab/sampleweb:v2", "docker.io/homelab/sampleweb:v3"

	r.up(t, "rack up with v1")
	st, code := r.appStatus(t)
	wantStatus(t, st, map[string]any{"name": "web", "strategy": "canary", "stable": v1, "candidate": nil, "step": nil, "active": nil,
		"weights": map[string]int{"stable": 100, "candidate": 0}, "healthy": true})
	if code != exitOK {
		t.Errorf("status of a healthy app: exit %d", code)
	}

	r.setImage(t, "v2")
	if out := r.up(t, "rack up with v2"); !strings.Contains(out, "candidate "+v2+" at 10% (step 1 of 3): rack app promote web") {
		t.Errorf("rack up does not say the candidate is deployed and how to promote it:\n%s", out)
	}
	st, _ = r.appStatus(t)
	wantStatus(t, st, map[string]any{"stable": v1, "candidate": v2, "step": 0, "active": nil,
		"weights": map[string]int{"stable": 90, "candidate": 10}, "healthy": true})
	text, _, code := rack(t, nil, "-i", r.invFile, "app", "status", "web")
	if code != exitOK || !strings.Contains(text, "candidate: "+v2+" (step 1 of 3)") || !strings.Contains(text, "weights:   stable 90%, candidate 10%") {
		t.Errorf("rack app status: exit %d\n%s", code, text)
	}

	if _, errOut, code := rack(t, nil, "-i", r.invFile, "app", "promote", "web", "--interval", "1s"); code != exitUsage || !strings.Contains(errOut, "add --auto") {
		t.Errorf("--interval without --auto: exit %d\n%s", code, errOut)
	}

	out, errOut, code := rack(t, nil, "-i", r.invFile, "app", "promote", "web")
	if code != exitOK {
		t.Fatalf("promote: exit %d\n%s\n%s", code, out, errOut)
	}
	if w := r.weights(t); w["web-blue"] != 50 || w["web-green"] != 50 {
		t.Errorf("after one promote the cluster routes %v, want 50/50", w)
	}
	st, _ = r.appStatus(t)
	wantStatus(t, st, map[string]any{"step": 1, "weights": map[string]int{"stable": 50, "candidate": 50}})

	out, errOut, code = rack(t, nil, "-i", r.invFile, "app", "promote", "web", "--auto", "--interval", "1s")
	if code != exitOK {
		t.Fatalf("promote --auto: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("promote --auto:\n%s", errOut)
	st, _ = r.appStatus(t)
	wantStatus(t, st, map[string]any{"stable": v2, "candidate": nil, "step": nil, "weights": map[string]int{"stable": 100, "candidate": 0}, "healthy": true})
	if got := r.deployments(t); !slices.Equal(got, []string{"web-green=v2"}) {
		t.Errorf("Deployments after the release %v, want web-green=v2 only", got)
	}

	t.Run("a candidate that stops being Available is rolled back by --auto", func(t *testing.T) {
		r.setImage(t, "v3")
		r.up(t, "rack up with v3")
		// The candidate's pods stop being ready (as a crashing app's would).
		ctx := context.Background()
		pods, err := r.cs.CoreV1().Pods(apps.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: apps.LabelColour + "=blue"})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("candidate pods: %v", err)
		}
		for i := range pods.Items {
			if err := apptest.MakeUnready(ctx, r.cs, &pods.Items[i]); err != nil {
				t.Fatal(err)
			}
		}
		gate := &release.Gate{Client: r.cs}
		inv, _, _ := inventory.Load(r.invFile)
		deadline := time.Now().Add(time.Minute)
		for {
			if ok, _ := gate.Health(ctx, inv.Apps[0], release.State{Release: apps.Release{Stable: v2, Candidate: v3, Colour: apps.Green}}); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the Deployment controller never saw the candidate's pods unready")
			}
			time.Sleep(200 * time.Millisecond)
		}
		st, code := r.appStatus(t)
		if code != exitFailed || st["healthy"] != false {
			t.Errorf("status of an app whose candidate is not Available: exit %d, healthy %v", code, st["healthy"])
		}

		out, errOut, code := rack(t, nil, "-i", r.invFile, "app", "promote", "web", "--auto", "--interval", "1s")
		if code != exitFailed {
			t.Fatalf("promote --auto with a failing gate: exit %d, want 1\n%s\n%s", code, out, errOut)
		}
		t.Logf("promote --auto with a failing gate:\n%s", errOut)
		for _, want := range []string{"Deployment web-blue is not Available", "rolled back (all traffic on " + v2} {
			if !strings.Contains(errOut, want) {
				t.Errorf("promote --auto does not say %q:\n%s", want, errOut)
			}
		}
		st, _ = r.appStatus(t)
		wantStatus(t, st, map[string]any{"stable": v2, "candidate": nil, "healthy": true, "rolledBack": v3})
		if st["healthy"] != true {
			t.Logf("not healthy: %v", st["reason"])
		}
		if got := r.deployments(t); !slices.Equal(got, []string{"web-green=v2"}) {
			t.Errorf("Deployments after the rollback %v, want web-green=v2 only", got)
		}
		if w := r.weights(t); len(w) != 1 || w["web-green"] != 100 {
			t.Errorf("after the rollback the cluster routes %v", w)
		}
		// rack up leaves v3 out while the inventory names it.
		if out := r.up(t, "rack up after the rollback"); strings.Contains(out, "candidate") {
			t.Errorf("rack up deployed the rolled-back image again:\n%s", out)
		}
		if _, errOut, code := rack(t, nil, "-i", r.invFile, "app", "rollback", "web"); code != exitFailed || !strings.Contains(errOut, "no candidate to roll back") {
			t.Errorf("rollback without a candidate: exit %d\n%s", code, errOut)
		}
	})
}

func TestAppUsage(t *testing.T) {
	for _, args := range [][]string{{"app", "status"}, {"app", "promote"}, {"app", "rollback", "a", "b"}, {"render"}} {
		_, _, code := rack(t, nil, append([]string{"-i", "../../inventory/rack.yaml"}, args...)...)
		if code != exitUsage {
			t.Errorf("rack %v: exit %d, want 2", args, code)
		}
	}
	_, errOut, code := rack(t, nil, "-i", "../../inventory/rack.yaml", "app", "status", "nope")
	if code != exitFailed {
		t.Errorf("status of an app that is not in the inventory: exit %d\n%s", code, errOut)
	}
}
