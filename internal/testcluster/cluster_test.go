package testcluster

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/homelab/rack/internal/testenv"
	"github.com/homelab/rack/nodes/kube"
)

const wantVersion = "v1.36.4"

func TestControlPlane(t *testing.T) {
	t.Parallel()
	c := New(t, WithSANs("192.0.2.7", "rack.example"))
	t.Logf("cold start: %v", c.StartupTime)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	cs := c.Clientset()
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != wantVersion {
		t.Errorf("server version %s, want %s", v.GitVersion, wantVersion)
	}

	t.Run("certificates", func(t *testing.T) {
		cert := parseCert(t, c.path("apiserver.crt"))
		for _, host := range []string{"127.0.0.1", ServiceIP, "kubernetes", "kubernetes.default.svc", "192.0.2.7", "rack.example"} {
			if err := cert.VerifyHostname(host); err != nil {
				t.Errorf("serving certificate: %v", err)
			}
		}
		admin, _ := pem.Decode(c.AdminCertPEM)
		ac, err := x509.ParseCertificate(admin.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(ac.Subject.Organization) != 1 || ac.Subject.Organization[0] != "system:masters" {
			t.Errorf("admin certificate groups %v, want [system:masters]", ac.Subject.Organization)
		}
	})

	t.Run("RBAC applies to other users", func(t *testing.T) {
		cert, key, err := c.ClientCert("jane", "developers")
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.RESTConfig()
		cfg.CertData, cfg.KeyData = cert, key
		jane, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = jane.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("jane lists kube-system secrets: err %v, want Forbidden", err)
		}
	})

	t.Run("kubeconfig", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Host != c.URL {
			t.Errorf("kubeconfig server %s, want %s", cfg.Host, c.URL)
		}
		// The kubeconfig works for kubectl-style clients on its own.
		if _, err := cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
			t.Errorf("kube-system: %v", err)
		}
	})

	t.Run("kwok runs pods on nodes", func(t *testing.T) {
		began := time.Now()
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:   "worker-1",
			Labels: map[string]string{"kubernetes.io/hostname": "worker-1", "kubernetes.io/os": "linux"},
		}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, ctx, "node worker-1 Ready", func() (bool, string) {
			n, err := cs.CoreV1().Nodes().Get(ctx, "worker-1", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return kube.NodeReady(n), conditions(n)
		})
		t.Logf("node Ready after %v", time.Since(began).Round(time.Millisecond))

		replicas := int32(3)
		labels := map[string]string{"app": "web"}
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "web", Image: "nginx:1.27",
					}}},
				},
			},
		}
		if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, ctx, "3 web pods Running on worker-1", func() (bool, string) {
			pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return false, err.Error()
			}
			running := 0
			var states []string
			for _, p := range pods.Items {
				states = append(states, p.Name+"="+string(p.Status.Phase)+"@"+p.Spec.NodeName)
				if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == "worker-1" && p.Status.PodIP != "" {
					running++
				}
			}
			return running == 3, strings.Join(states, " ")
		})
		t.Logf("pods Running after %v", time.Since(began).Round(time.Millisecond))
		testenv.WaitFor(t, ctx, "deployment web available", func() (bool, string) {
			d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return d.Status.AvailableReplicas == 3, d.Status.String()
		})
	})

	// kwok's watches are streaming lists, which a datastore without watch
	// progress requests (Debian's etcd 3.4) cannot serve: every watch then
	// ends in an error, kwok's caches go stale and it renews Node leases
	// from stale copies, in conflict, until a Node misses its grace period
	// and the node controller marks its pods NotReady for good (seen: a Helm
	// release that never became ready). kine serves them.
	t.Run("kwok's watches stay open and its lease renewals succeed", func(t *testing.T) {
		var renewals []string
		testenv.WaitFor(t, ctx, "two renewals of worker-1's lease", func() (bool, string) {
			l, err := cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, "worker-1", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if l.Spec.RenewTime != nil {
				if r := l.Spec.RenewTime.String(); len(renewals) == 0 || renewals[len(renewals)-1] != r {
					renewals = append(renewals, r)
				}
			}
			return len(renewals) >= 3, strings.Join(renewals, ", ")
		})
		log, err := os.ReadFile(filepath.Join(c.Dir, "kwok.log"))
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"watch ended with error", "Failed to sync lease"} {
			if n := strings.Count(string(log), bad); n > 0 {
				t.Errorf("kwok's log says %q %d times", bad, n)
			}
		}
	})

	if err := c.Alive(); err != nil {
		t.Error(err)
	}
}

// A run that died without cleaning up leaves a directory whose owner is
// gone and maybe a component still running from it; the next Start must
// remove both.
func TestStaleRunIsCleanedUp(t *testing.T) {
	requireRoot(t)
	root, err := stateRoot()
	if err != nil {
		t.Fatal(err)
	}
	stale, err := os.MkdirTemp(root, "c")
	if err != nil {
		t.Fatal(err)
	}
	// A PID that cannot be alive with this start time.
	b, _ := json.Marshal(owner{PID: os.Getpid(), Start: 1, BootID: bootID()})
	if err := os.WriteFile(filepath.Join(stale, ownerFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	// A leftover "component": its argv names a file in the stale dir.
	leftover := exec.Command("/bin/sh", "-c", "while :; do sleep 0.1; done", filepath.Join(stale, "etcd"))
	if err := leftover.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = leftover.Wait(); close(exited) }()
	t.Cleanup(func() { _ = leftover.Process.Kill() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := newClusterDir(ctx, "", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale dir %s still there (err %v)", stale, err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("leftover process %d of the stale run still runs", leftover.Process.Pid)
	}
}

// Stopping really stops: no component survives Close, and the directory is gone.
func TestCloseStopsEverything(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	b := binaries(t, ctx)
	c, err := Start(ctx, Options{Binaries: &b, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range c.procs {
		pids = append(pids, p.Cmd.Process.Pid)
	}
	began := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(began).Round(time.Millisecond))
	for _, pid := range pids {
		if _, err := procStart(pid); err == nil {
			t.Errorf("pid %d still runs after Close", pid)
		}
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("dir %s survives Close", c.Dir)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// requireRoot skips like New does: not as root, unless CI demands it.
func requireRoot(t *testing.T) {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		testenv.SkipOrFail(t, "testcluster: needs root (running as uid %d)", uid)
	}
}

// binaries finds the control plane or skips like New does.
func binaries(t *testing.T, ctx context.Context) Binaries {
	t.Helper()
	b, err := FindBinaries(ctx, t.Logf)
	if err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	return b
}

func parseCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func conditions(n *corev1.Node) string {
	var s []string
	for _, c := range n.Status.Conditions {
		s = append(s, string(c.Type)+"="+string(c.Status))
	}
	return strings.Join(s, ",")
}
