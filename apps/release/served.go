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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/internal/sleep"
	"github.com/homelab/rack/inventory"
)

// MarkerHits is how many times in a row, each on a new connection, a
// route's marker must answer before Served believes Traefik serves the
// route: Traefik runs more than one replica behind its address, each
// loading the route on its own, and the address spreads connections over
// them at random. Twenty misses a replica still on the old route once in
// a million (with two replicas), for a few milliseconds each.
const MarkerHits = 20

// servedPoll is how often Served asks again.
const servedPoll = 200 * time.Millisecond

// Served waits until clients see app as st says, or ctx ends. The API
// server has the objects once they are applied, but clients see them a
// moment later, so a deliverer that returned then would leave clients on
// what they reached before (a new route answering 404, a moved one still
// reaching the old version) for a second or two. It waits for:
//
//   - every Deployment of the release rolled out at its rendered images,
//     and no pod of the app still stopping: an old pod answers through its
//     preStop pause whoever still sends it requests (Traefik and
//     kube-proxy stop a moment after the API says so), so clients reach
//     only the new version once the old pods are gone;
//   - Traefik serving every IngressRoute of the app as rendered: its marker
//     (apps.RouteMarker) answers apps.MarkerStatus MarkerHits times in a
//     row through Traefik's address, each on a new connection.
//
// It returns what was not served when ctx ended, nil when all was.
func (g *Gate) Served(ctx context.Context, app inventory.App, st State) error {
	objs, err := apps.Render(app, st.Release, apps.Options{Namespace: g.ns()})
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		if reason := poll(ctx, func() string { return g.rolledOut(ctx, o) }); reason != "" {
			return fmt.Errorf("%s", reason)
		}
	}
	if reason := poll(ctx, func() string { return g.noneStopping(ctx, app) }); reason != "" {
		return fmt.Errorf("%s", reason)
	}
	markers := apps.RouteMarkers(objs)
	if len(markers) == 0 {
		return nil
	}
	addr, port, reason := g.loadBalancer(ctx, g.traefikNS(), g.traefikSvc(), TraefikPort)
	if reason != "" {
		return fmt.Errorf("cannot ask Traefik whether it serves the app's routes: %s", reason)
	}
	client := g.markerClient()
	for _, m := range markers {
		url := "http://" + net.JoinHostPort(addr, strconv.Itoa(port)) + m.Path
		reason := poll(ctx, func() string { return marked(ctx, client, url, m.Host) })
		if reason != "" {
			return fmt.Errorf("traefik does not serve IngressRoute %s as rendered yet (GET %s with Host %s: %s): see kubectl -n %s logs deployment/%s",
				m.Route, url, m.Host, reason, g.traefikNS(), g.traefikSvc())
		}
	}
	return nil
}

// poll calls f until it returns "" or ctx ends, and returns its last
// reason. A try cut short by ctx's end (the client's rate limiter refuses a
// request it could not finish in time) says only that time ran out, so the
// reason before it is kept, and no try starts in the last second.
func poll(ctx context.Context, f func() string) string {
	var last string
	for {
		reason := f()
		if reason == "" {
			return ""
		}
		if ctx.Err() != nil && last != "" {
			return last
		}
		last = reason
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < servedPoll+time.Second {
			return last
		}
		if sleep.For(ctx, servedPoll) != nil {
			return last
		}
	}
}

// rolledOut says why the rendered Deployment d is not rolled out at its
// images yet, "" once it is.
func (g *Gate) rolledOut(ctx context.Context, d *unstructured.Unstructured) string {
	live, reason := g.deployment(ctx, d.GetName())
	if reason != "" {
		return reason
	}
	ctrs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	for i, c := range ctrs {
		want, _ := c.(map[string]any)["image"].(string)
		if i >= len(live.Spec.Template.Spec.Containers) {
			return fmt.Sprintf("Deployment %s has %d containers, the release %d", d.GetName(), len(live.Spec.Template.Spec.Containers), len(ctrs))
		}
		if got := live.Spec.Template.Spec.Containers[i].Image; got != want {
			return fmt.Sprintf("Deployment %s runs %s, the release says %s", d.GetName(), got, want)
		}
	}
	return ""
}

// noneStopping says which pods of app are still stopping, "" when none is.
func (g *Gate) noneStopping(ctx context.Context, app inventory.App) string {
	sel := labels.SelectorFromSet(labels.Set{apps.LabelName: app.Name, apps.LabelManagedBy: apps.ManagedBy})
	list, err := g.Client.CoreV1().Pods(g.ns()).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return fmt.Sprintf("cannot list the pods of %s: %v", app.Name, err)
	}
	var stopping []string
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			stopping = append(stopping, p.Name)
		}
	}
	if len(stopping) == 0 {
		return ""
	}
	sort.Strings(stopping)
	return fmt.Sprintf("pods of a version clients no longer reach are still stopping: %s", strings.Join(stopping, ", "))
}

// markerClient asks markers on a new connection each time, so that the
// address spreads the requests over every Traefik replica.
func (g *Gate) markerClient() *http.Client {
	if g.HTTP != nil {
		return g.HTTP
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableKeepAlives = true
	return &http.Client{
		Timeout:       2 * time.Second,
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// marked says why the marker at url on host did not answer
// apps.MarkerStatus MarkerHits times in a row, "" when it did.
func marked(ctx context.Context, client *http.Client, url, host string) string {
	for range MarkerHits {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err.Error()
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return err.Error()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode != apps.MarkerStatus {
			return "answered " + resp.Status
		}
	}
	return ""
}
