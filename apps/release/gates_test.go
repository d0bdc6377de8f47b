package release_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/apptest"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/inventory"
)

// gateCluster is a test API server (kwok runs the pods as far as their
// status goes) with Traefik's CRDs, the apps namespace and one Node.
type gateCluster struct {
	srv *addontest.Server
	cs  kubernetes.Interface
}

func newGateCluster(t *testing.T) *gateCluster {
	t.Helper()
	c, srv := addontest.Start(t, (*addontest.Server).InstallTraefikCRDs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := c.Clientset()
	apptest.KeepReady(t, cs, apps.DefaultNamespace)
	for _, ns := range []string{apps.DefaultNamespace, release.TraefikNamespace} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kwok-1", Labels: map[string]string{
		"kubernetes.io/hostname": "kwok-1", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return &gateCluster{srv: srv, cs: cs}
}

var gvr = map[string]schema.GroupVersionResource{
	"Secret":                {Version: "v1", Resource: "secrets"},
	"PersistentVolumeClaim": {Version: "v1", Resource: "persistentvolumeclaims"},
	"Service":               {Version: "v1", Resource: "services"},
	"Deployment":            {Group: "apps", Version: "v1", Resource: "deployments"},
	"PodDisruptionBudget":   {Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
	"TraefikService":        {Group: "traefik.io", Version: "v1alpha1", Resource: "traefikservices"},
	"IngressRoute":          {Group: "traefik.io", Version: "v1alpha1", Resource: "ingressroutes"},
}

// deliver applies what Render makes of app in rel, server-side, as a
// deliverer does (removed objects are left: the gates do not look at them).
func (g *gateCluster) deliver(t *testing.T, app inventory.App, rel apps.Release) {
	t.Helper()
	objs, err := apps.Render(app, rel, apps.Options{})
	if err != nil {
		t.Fatal(err)
	}
	force := true
	for _, o := range objs {
		body, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.srv.Dynamic().Resource(gvr[o.GetKind()]).Namespace(o.GetNamespace()).Patch(context.Background(), o.GetName(),
			types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "rack-test", Force: &force}); err != nil {
			t.Fatalf("apply %s: %v", apps.Key(o), err)
		}
	}
}

// waitAvailable waits for the gate's own verdict on a Deployment.
func (g *gateCluster) waitHealthy(t *testing.T, gate *release.Gate, app inventory.App, st release.State) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ok, reason := gate.Health(context.Background(), app, st)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became healthy: %s", app.Name, reason)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// loadBalancer gives a Service the address MetalLB would: loopback, where
// a test server stands in for what answers there.
func (g *gateCluster) loadBalancer(t *testing.T, ns, name string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for {
		s, err := g.cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "127.0.0.1"}}
		_, err = g.cs.CoreV1().Services(ns).UpdateStatus(ctx, s, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("give Service %s/%s a LoadBalancer address: %v", ns, name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fakeTraefik answers as Traefik would route: the check path of the app's
// host with the preview header reaches the candidate, which answers status.
type fakeTraefik struct {
	*httptest.Server
	status atomic.Int32
	asked  atomic.Int32
	port   int
}

func newFakeTraefik(t *testing.T, host, path string) *fakeTraefik {
	t.Helper()
	f := &fakeTraefik{}
	f.status.Store(http.StatusOK)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.asked.Add(1)
		if r.Host != host || r.Header.Get(apps.PreviewHeader) != apps.PreviewValue || r.URL.Path != path {
			http.NotFound(w, r) // the stable version has no such answer in this test
			return
		}
		w.WriteHeader(int(f.status.Load()))
	}))
	t.Cleanup(f.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(f.URL, "http://"))
	f.port, _ = strconv.Atoi(port)
	return f
}

func (g *gateCluster) traefikService(t *testing.T, port int) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: release.TraefikService, Namespace: release.TraefikNamespace},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "traefik"},
			Ports: []corev1.ServicePort{{Name: "websecure", Port: 443}, {Name: release.TraefikPort, Port: int32(port)}}},
	}
	if _, err := g.cs.CoreV1().Services(release.TraefikNamespace).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	g.loadBalancer(t, release.TraefikNamespace, release.TraefikService)
}

func cordon(t *testing.T, cs kubernetes.Interface, on bool) {
	t.Helper()
	ctx := context.Background()
	n, err := cs.CoreV1().Nodes().Get(ctx, "kwok-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Unschedulable = on
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestGatesReadTheCluster: the gates against a real API server.
func TestGatesReadTheCluster(t *testing.T) {
	g := newGateCluster(t)
	ctx := context.Background()
	gate := &release.Gate{Client: g.cs}

	web := inventory.App{
		Name: "web", Image: "docker.io/homelab/sampleweb:v1", Port: 8080, Replicas: 2,
		Expose:   &inventory.Expose{Host: "web.home.arpa"},
		Strategy: inventory.Strategy{Type: inventory.StrategyCanary, Steps: []int{10, 50, 100}, Check: "/ready"},
	}
	rel, _ := apps.Deploy(web, apps.Release{})
	v2 := web
	v2.Image = "docker.io/homelab/sampleweb:v2"
	rel, _ = apps.Deploy(v2, rel)
	st := release.State{Release: rel}
	g.deliver(t, v2, rel)
	traefik := newFakeTraefik(t, "web.home.arpa", "/ready")
	g.traefikService(t, traefik.port)
	g.waitHealthy(t, gate, v2, st)

	t.Run("candidate Available, no restarts, check answers through Traefik", func(t *testing.T) {
		v := gate.Check(ctx, v2, st)
		if !v.Passed {
			t.Fatalf("gate failed: %s", v.Reason)
		}
		if len(v.Restarts) != 2 || traefik.asked.Load() == 0 {
			t.Errorf("restarts %v (want the 2 candidate pods), Traefik asked %d times", v.Restarts, traefik.asked.Load())
		}
		t.Logf("passed: %s", strings.Join(v.Passes, "; "))
	})

	t.Run("check answers 503", func(t *testing.T) {
		traefik.status.Store(http.StatusServiceUnavailable)
		defer traefik.status.Store(http.StatusOK)
		v := gate.Check(ctx, v2, st)
		if v.Passed || !strings.Contains(v.Reason, "answered 503") || !strings.Contains(v.Reason, "Host: web.home.arpa") {
			t.Errorf("verdict %+v, want the check's 503", v)
		}
	})

	t.Run("a restart since the last step", func(t *testing.T) {
		pods, err := g.cs.CoreV1().Pods(apps.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: apps.LabelColour + "=green"})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("candidate pods: %v", err)
		}
		p := pods.Items[0]
		p.Status.ContainerStatuses[0].RestartCount = 3
		if _, err := g.cs.CoreV1().Pods(apps.DefaultNamespace).UpdateStatus(ctx, &p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		v := gate.Check(ctx, v2, st)
		if v.Passed || !strings.Contains(v.Reason, p.Name+" (0 → 3)") {
			t.Errorf("verdict %+v, want pod %s's restarts", v, p.Name)
		}
		// Recorded with the last step, the same count passes.
		recorded := st
		recorded.Restarts = map[string]int32{p.Name: 3}
		if v := gate.Check(ctx, v2, recorded); !v.Passed {
			t.Errorf("restarts recorded with the step still fail the gate: %s", v.Reason)
		}
	})

	t.Run("a candidate that never becomes Available", func(t *testing.T) {
		api := inventory.App{Name: "api", Image: "api:1", Port: 8080, Replicas: 1,
			Strategy: inventory.Strategy{Type: inventory.StrategyBlueGreen, Check: "/ready"}}
		arel, _ := apps.Deploy(api, apps.Release{})
		g.deliver(t, api, arel)
		g.waitHealthy(t, gate, api, release.State{Release: arel})
		cordon(t, g.cs, true)
		defer cordon(t, g.cs, false)
		api2 := api
		api2.Image = "api:2"
		arel, _ = apps.Deploy(api2, arel)
		g.deliver(t, api2, arel)
		time.Sleep(2 * time.Second) // the controller has seen it
		v := gate.Check(ctx, api2, release.State{Release: arel})
		if v.Passed || !strings.Contains(v.Reason, "Deployment api-green is not Available") {
			t.Errorf("verdict %+v, want api-green not Available", v)
		}
		if ok, reason := gate.Health(ctx, api2, release.State{Release: arel}); ok || !strings.Contains(reason, "api-green") {
			t.Errorf("health %v %q", ok, reason)
		}

		// Available at last, it is asked through the API server's proxy
		// (no expose): kwok's pods answer nothing, so the check fails,
		// naming the way it went.
		cordon(t, g.cs, false)
		g.waitHealthy(t, gate, api2, release.State{Release: arel})
		v = gate.Check(ctx, api2, release.State{Release: arel})
		if v.Passed || !strings.Contains(v.Reason, "through the API server's proxy to Service apps/api-preview") {
			t.Errorf("verdict %+v, want the proxied check to fail", v)
		}
	})

	t.Run("served: Traefik serves the routes' markers, no old pod still stopping", func(t *testing.T) {
		objs, err := apps.Render(v2, rel, apps.Options{})
		if err != nil {
			t.Fatal(err)
		}
		markers := map[string]bool{}
		for _, m := range apps.RouteMarkers(objs) {
			markers[m.Host+m.Path] = true
		}
		if len(markers) != 2 {
			t.Fatalf("markers %v, want the main route's and the preview's", markers)
		}
		// Traefik that has not loaded the routes yet answers 404, as
		// for any path no route matches.
		var loaded atomic.Bool
		var asked atomic.Int32
		handler := traefik.Config.Handler
		defer func() { traefik.Config.Handler = handler }()
		traefik.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			asked.Add(1)
			if loaded.Load() && markers[r.Host+r.URL.Path] {
				w.WriteHeader(apps.MarkerStatus)
				return
			}
			http.NotFound(w, r)
		})
		// The refusals below are expected before d ends; d leaves a busy
		// machine's API server time to answer the pod list.
		served := func(d time.Duration) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return gate.Served(ctx, v2, st)
		}
		if err := served(5 * time.Second); err == nil || !strings.Contains(err.Error(), "traefik does not serve IngressRoute web as rendered yet") ||
			!strings.Contains(err.Error(), "404 Not Found") {
			t.Errorf("served before Traefik loaded the routes: %v", err)
		}
		loaded.Store(true)
		before := asked.Load()
		if err := served(30 * time.Second); err != nil {
			t.Errorf("served once Traefik loaded the routes: %v", err)
		}
		if n := asked.Load() - before; n < 2*release.MarkerHits {
			t.Errorf("Traefik asked %d times, want %d hits for each of the 2 markers", n, release.MarkerHits)
		}

		// An old pod in its preStop pause still answers.
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-old", Namespace: apps.DefaultNamespace, Finalizers: []string{"rack.homelab/test"},
				Labels: map[string]string{apps.LabelName: "web", apps.LabelManagedBy: apps.ManagedBy, apps.LabelColour: "old"}},
			Spec: corev1.PodSpec{NodeName: "kwok-1", Containers: []corev1.Container{{Name: "web", Image: "web:0"}}},
		}
		pods := g.cs.CoreV1().Pods(apps.DefaultNamespace)
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		now := int64(0) // gone once the finalizer is: no kubelet here to confirm
		if err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
			t.Fatal(err)
		}
		if err := served(5 * time.Second); err == nil || !strings.Contains(err.Error(), "still stopping: web-old") {
			t.Errorf("served with an old pod stopping: %v", err)
		}
		patch := []byte(`{"metadata":{"finalizers":null}}`)
		if _, err := pods.Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := served(30 * time.Second); err != nil {
			t.Errorf("served once the old pod is gone: %v", err)
		}
	})

	t.Run("expose without a host: the preview Service's LoadBalancer address", func(t *testing.T) {
		backend := newFakeTraefik(t, "", "/ready") // no Host to match: answers 404 unless...
		backend.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			backend.asked.Add(1)
			if r.URL.Path == "/ready" && r.Header.Get(apps.PreviewHeader) == "" {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			http.NotFound(w, r)
		})
		lb := inventory.App{Name: "lb", Image: "lb:1", Port: backend.port, Replicas: 1, Expose: &inventory.Expose{},
			Strategy: inventory.Strategy{Type: inventory.StrategyBlueGreen, Check: "/ready"}}
		lrel, _ := apps.Deploy(lb, apps.Release{})
		lb2 := lb
		lb2.Image = "lb:2"
		lrel, _ = apps.Deploy(lb2, lrel)
		g.deliver(t, lb2, lrel)
		lst := release.State{Release: lrel}
		g.waitHealthy(t, gate, lb2, lst)
		v := gate.Check(ctx, lb2, lst)
		if v.Passed || !strings.Contains(v.Reason, "Service apps/lb-preview has no LoadBalancer address") {
			t.Errorf("verdict %+v, want the missing address named", v)
		}
		g.loadBalancer(t, apps.DefaultNamespace, "lb-preview")
		if v := gate.Check(ctx, lb2, lst); !v.Passed || backend.asked.Load() == 0 {
			t.Errorf("verdict %+v (asked %d), want the check through the preview address", v, backend.asked.Load())
		}
	})
}
