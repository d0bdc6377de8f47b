package apps

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Route markers: how a deliverer learns that Traefik serves a route as
// rendered, not as it was before. The API server accepts an IngressRoute
// or a TraefikService at once, but Traefik loads it a moment later (its
// providers throttle reloads: 2 s by default, 200 ms as rack installs it),
// and until then a new route answers 404 and a moved one still reaches
// the old version. So every
// IngressRoute ends with one more route: requests for the marker path on
// the app's host go to Traefik's internal noop service, which answers
// MarkerStatus. The path carries a digest of the IngressRoute's other
// routes and of the TraefikServices they send requests to, so it changes
// whenever what clients reach changes: once the new marker answers
// MarkerStatus, Traefik serves that version of the route.
const (
	// MarkerPathPrefix starts every marker path:
	// /.rack/route/<IngressRoute>/<digest>.
	MarkerPathPrefix = "/.rack/route/"
	// MarkerService is Traefik's internal service that answers
	// MarkerStatus to every request, whatever the app does.
	MarkerService = "noop@internal"
	// MarkerStatus is what MarkerService answers: 418 I'm a teapot.
	MarkerStatus = 418
)

// RouteMarker is one IngressRoute's marker: a request for Path with Host
// answers MarkerStatus once Traefik serves this version of the route.
type RouteMarker struct {
	// Route is the IngressRoute's name.
	Route string
	Host  string
	Path  string
}

var markerRule = regexp.MustCompile("^Host\\(`([^`]+)`\\) && Path\\(`([^`]+)`\\)$")

// RouteMarkers returns the marker of every IngressRoute in objs (one app's
// Render), in order.
func RouteMarkers(objs []*unstructured.Unstructured) []RouteMarker {
	var out []RouteMarker
	for _, o := range objs {
		if o.GetKind() != "IngressRoute" {
			continue
		}
		rs, _, _ := unstructured.NestedSlice(o.Object, "spec", "routes")
		for _, r := range rs {
			m, _ := r.(map[string]any)
			if !routesTo(m, MarkerService) {
				continue
			}
			match, _ := m["match"].(string)
			if sub := markerRule.FindStringSubmatch(match); sub != nil {
				out = append(out, RouteMarker{Route: o.GetName(), Host: sub[1], Path: sub[2]})
			}
		}
	}
	return out
}

func routesTo(route map[string]any, name string) bool {
	svcs, _ := route["services"].([]any)
	for _, s := range svcs {
		if m, _ := s.(map[string]any); m != nil && m["name"] == name {
			return true
		}
	}
	return false
}

// markRoutes appends its marker route to every IngressRoute of objs.
func markRoutes(objs []*unstructured.Unstructured) {
	for _, o := range objs {
		if o.GetKind() != "IngressRoute" {
			continue
		}
		rs, _, _ := unstructured.NestedSlice(o.Object, "spec", "routes")
		if len(rs) == 0 {
			continue
		}
		host := ""
		if m := hostOf.FindStringSubmatch(rs[0].(map[string]any)["match"].(string)); m != nil {
			host = m[1]
		}
		// What the routes send requests to, beyond their own rules: the
		// TraefikServices they name (weights, mirrors).
		var targets []any
		for _, t := range DependsOn(o, objs) {
			if t.GetKind() == "TraefikService" {
				targets = append(targets, map[string]any{"name": t.GetName(), "spec": t.Object["spec"]})
			}
		}
		path := MarkerPathPrefix + o.GetName() + "/" + digest(map[string]any{"routes": rs, "traefikServices": targets})
		rs = append(rs, map[string]any{
			"kind":     "Rule",
			"match":    hostRule(host) + " && " + pathRule(path),
			"priority": int64(PriorityMarker),
			"services": []any{map[string]any{"kind": "TraefikService", "name": MarkerService}},
		})
		if err := unstructured.SetNestedSlice(o.Object, rs, "spec", "routes"); err != nil {
			panic(fmt.Sprintf("apps: marker of %s: %v", Key(o), err)) // routes is a plain slice
		}
	}
}

var hostOf = regexp.MustCompile("^Host\\(`([^`]+)`\\)")

// pathRule matches requests for exactly path.
func pathRule(path string) string { return fmt.Sprintf("Path(`%s`)", path) }

// digest is a short, stable digest of a JSON-shaped value (encoding/json
// writes map keys sorted).
func digest(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("apps: digest: %v", err)) // plain JSON-shaped values always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:12]
}
