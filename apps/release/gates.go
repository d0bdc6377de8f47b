package release

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/internal/sleep"
	"github.com/homelab/rack/inventory"
)

// Where rack's Traefik addon (addons/traefik) runs; its LoadBalancer
// Service is the front door of every app with expose.host. (Not imported:
// this package stays free of Pulumi.)
const (
	TraefikNamespace = "traefik"
	TraefikService   = "traefik"
	// TraefikPort names the Service port of the web entry point.
	TraefikPort = "web"
)

// checkAttempts is how often the check path is asked before the gate
// fails, a second apart: one lost packet must not roll a release back.
const checkAttempts = 3

// Gate reads an app's health from the cluster: Deployments from the API,
// and the optional strategy.check path through the app's own route.
type Gate struct {
	Client kubernetes.Interface
	// Namespace holds the apps (default apps.DefaultNamespace).
	Namespace string
	// HTTP asks the check path (default: a client with a 5 s timeout that
	// follows no redirects: a 3xx is not a 2xx).
	HTTP *http.Client
	// TraefikNamespace and TraefikService locate Traefik's Service
	// (defaults: the addon's).
	TraefikNamespace, TraefikService string
}

// Verdict is the outcome of a gate.
type Verdict struct {
	Passed bool
	// Reason says why the gate failed and what to look at.
	Reason string
	// Restarts are the candidate pods' restart counts now, recorded with
	// the step the gate lets through.
	Restarts map[string]int32
	// Passes lists what was checked and held, for verbose output.
	Passes []string
}

func (g *Gate) ns() string {
	if g.Namespace == "" {
		return apps.DefaultNamespace
	}
	return g.Namespace
}

func (g *Gate) httpClient() *http.Client {
	if g.HTTP != nil {
		return g.HTTP
	}
	return &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Check is the gate before the next step of st: the candidate Deployment
// is Available, none of its pods restarted since the last step, and
// strategy.check (when set) answers 2xx through the app's route, reaching
// the candidate.
func (g *Gate) Check(ctx context.Context, app inventory.App, st State) Verdict {
	v := Verdict{}
	_, cand, err := apps.Deployments(app, st.Release)
	if err != nil {
		v.Reason = err.Error()
		return v
	}
	if cand == "" {
		v.Reason = fmt.Sprintf("%s has no candidate: change its image in the inventory and run rack up to deploy one", app.Name)
		return v
	}
	d, reason := g.deployment(ctx, cand)
	if reason != "" {
		v.Reason = reason
		return v
	}
	v.Passes = append(v.Passes, fmt.Sprintf("Deployment %s is Available (%d/%d pods)", cand, d.Status.AvailableReplicas, wanted(d)))

	pods, err := g.pods(ctx, d)
	if err != nil {
		v.Reason = fmt.Sprintf("cannot list the pods of Deployment %s: %v", cand, err)
		return v
	}
	v.Restarts = map[string]int32{}
	var restarted []string
	for _, p := range pods {
		n := restarts(p)
		v.Restarts[p.Name] = n
		if before := st.Restarts[p.Name]; n > before {
			restarted = append(restarted, fmt.Sprintf("%s (%d → %d)", p.Name, before, n))
		}
	}
	if len(restarted) > 0 {
		sort.Strings(restarted)
		v.Reason = fmt.Sprintf("candidate pods restarted since the last step: %s; see kubectl -n %s logs --previous POD", strings.Join(restarted, ", "), g.ns())
		return v
	}
	v.Passes = append(v.Passes, fmt.Sprintf("no restarts since the last step (%d pods)", len(pods)))

	if app.Strategy.Check != "" {
		where, reason := g.checkPath(ctx, app)
		if reason != "" {
			v.Reason = reason
			return v
		}
		v.Passes = append(v.Passes, fmt.Sprintf("GET %s answered 2xx", where))
	}
	v.Passed = true
	return v
}

// Health reports whether the app serves as its state says: the stable
// Deployment Available, and the candidate's too when there is one.
func (g *Gate) Health(ctx context.Context, app inventory.App, st State) (bool, string) {
	stable, cand, err := apps.Deployments(app, st.Release)
	if err != nil {
		return false, err.Error()
	}
	for _, name := range []string{stable, cand} {
		if name == "" {
			continue
		}
		if _, reason := g.deployment(ctx, name); reason != "" {
			return false, reason
		}
	}
	return true, ""
}

// DeploymentReady says why the named Deployment is not Available and fully
// rolled out, "" when it is: what a route may move onto.
func (g *Gate) DeploymentReady(ctx context.Context, name string) string {
	_, reason := g.deployment(ctx, name)
	return reason
}

// deployment returns the named Deployment when it is Available and fully
// rolled out, else why not.
func (g *Gate) deployment(ctx context.Context, name string) (*appsv1.Deployment, string) {
	d, err := g.Client.AppsV1().Deployments(g.ns()).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Sprintf("Deployment %s/%s does not exist: run rack up to deliver the app", g.ns(), name)
	}
	if err != nil {
		return nil, fmt.Sprintf("cannot read Deployment %s/%s: %v", g.ns(), name, err)
	}
	want := wanted(d)
	switch {
	case d.Status.ObservedGeneration < d.Generation:
		return nil, fmt.Sprintf("Deployment %s is not rolled out: the controller has not acted on its latest change yet", name)
	case !availableCondition(d):
		return nil, fmt.Sprintf("Deployment %s is not Available (%d of %d pods ready)%s: see kubectl -n %s describe deployment %s", name, d.Status.AvailableReplicas, want, conditionMessage(d), g.ns(), name)
	case d.Status.UpdatedReplicas < want || d.Status.AvailableReplicas < want:
		return nil, fmt.Sprintf("Deployment %s is not Available: %d of %d pods ready, %d updated", name, d.Status.AvailableReplicas, want, d.Status.UpdatedReplicas)
	case d.Status.Replicas > d.Status.UpdatedReplicas:
		return nil, fmt.Sprintf("Deployment %s is still rolling out: %d pods of an older version remain", name, d.Status.Replicas-d.Status.UpdatedReplicas)
	}
	return d, ""
}

func wanted(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func availableCondition(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func conditionMessage(d *appsv1.Deployment) string {
	for _, c := range d.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			return ": " + c.Message
		}
	}
	return ""
}

// pods are the Deployment's pods that are not being deleted.
func (g *Gate) pods(ctx context.Context, d *appsv1.Deployment) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, err
	}
	list, err := g.Client.CoreV1().Pods(g.ns()).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

func restarts(p corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	for _, s := range p.Status.InitContainerStatuses {
		n += s.RestartCount
	}
	return n
}

// checkPath asks strategy.check through the app's own route, reaching the
// candidate: Traefik with the preview header for an app with a host; the
// preview Service's LoadBalancer address for expose without a host; the
// API server's Service proxy for an app that is not exposed.
func (g *Gate) checkPath(ctx context.Context, app inventory.App) (where, reason string) {
	path := app.Strategy.Check
	preview := app.Name + "-preview"
	switch {
	case app.Expose != nil && app.Expose.Host != "":
		addr, port, reason := g.loadBalancer(ctx, g.traefikNS(), g.traefikSvc(), TraefikPort)
		if reason != "" {
			return "", "the check cannot reach Traefik: " + reason
		}
		url := "http://" + net.JoinHostPort(addr, strconv.Itoa(port)) + path
		return g.get(ctx, url, app.Expose.Host, true)
	case app.Expose != nil:
		addr, port, reason := g.loadBalancer(ctx, g.ns(), preview, apps.PortName)
		if reason != "" {
			return "", "the check cannot reach the candidate: " + reason
		}
		return g.get(ctx, "http://"+net.JoinHostPort(addr, strconv.Itoa(port))+path, "", false)
	default:
		where = fmt.Sprintf("%s through the API server's proxy to Service %s/%s", path, g.ns(), preview)
		var last error
		for i := range checkAttempts {
			if i > 0 && sleep.For(ctx, time.Second) != nil {
				break
			}
			_, last = g.Client.CoreV1().Services(g.ns()).ProxyGet("http", preview, strconv.Itoa(app.Port), path, nil).DoRaw(ctx)
			if last == nil {
				return where, ""
			}
		}
		return "", fmt.Sprintf("GET %s failed: %v", where, last)
	}
}

// get asks url checkAttempts times at most and passes on the first 2xx.
func (g *Gate) get(ctx context.Context, url, host string, preview bool) (where, reason string) {
	where = url
	if host != "" {
		where = fmt.Sprintf("%s (Host: %s, %s: %s)", url, host, apps.PreviewHeader, apps.PreviewValue)
	}
	var last string
	for i := range checkAttempts {
		if i > 0 && sleep.For(ctx, time.Second) != nil {
			break
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return "", fmt.Sprintf("GET %s: %v", where, err)
		}
		if host != "" {
			req.Host = host
		}
		if preview {
			req.Header.Set(apps.PreviewHeader, apps.PreviewValue)
		}
		resp, err := g.httpClient().Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return where, ""
		}
		last = "answered " + resp.Status
	}
	return "", fmt.Sprintf("GET %s %s", where, last)
}

// loadBalancer returns a Service's LoadBalancer address and the port named
// portName.
func (g *Gate) loadBalancer(ctx context.Context, ns, name, portName string) (string, int, string) {
	s, err := g.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", 0, fmt.Sprintf("Service %s/%s: %v", ns, name, err)
	}
	port := 0
	for _, p := range s.Spec.Ports {
		if p.Name == portName || port == 0 {
			port = int(p.Port)
		}
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		switch {
		case in.IP != "":
			return in.IP, port, ""
		case in.Hostname != "":
			return in.Hostname, port, ""
		}
	}
	return "", 0, fmt.Sprintf("Service %s/%s has no LoadBalancer address (is MetalLB running with a free address in its pools?)", ns, name)
}

func (g *Gate) traefikNS() string {
	if g.TraefikNamespace == "" {
		return TraefikNamespace
	}
	return g.TraefikNamespace
}

func (g *Gate) traefikSvc() string {
	if g.TraefikService == "" {
		return TraefikService
	}
	return g.TraefikService
}
