package apps_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// transition is one step a user takes between two release states.
type transition struct {
	name     string
	from, to state
}

// transitions are the steps through states(): each state to the next up
// to the full release, and the rollback of the candidate.
func transitions(t *testing.T, app inventory.App) []transition {
	t.Helper()
	sts := states(t, app)
	byName := map[string]state{}
	var out []transition
	for i, st := range sts {
		byName[st.name] = st
		if i > 0 && st.name != "rolled-back" {
			out = append(out, transition{sts[i-1].name + "→" + st.name, sts[i-1], st})
		}
	}
	if rb, ok := byName["rolled-back"]; ok {
		out = append(out, transition{"candidate→rolled-back", byName["candidate"], rb})
	}
	return out
}

func byKey(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	out := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		out[apps.Key(o)] = o
	}
	return out
}

func keysOf(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, apps.Key(o))
	}
	return out
}

func find(t *testing.T, objs []*unstructured.Unstructured, key string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if apps.Key(o) == key {
			return o
		}
	}
	t.Fatalf("no %s in %v", key, keysOf(objs))
	return nil
}

// TestDependsOn: a Traefik object needs exactly what it sends requests to
// (the TraefikServices and Services it names, the Deployments behind
// them); every other object the waves before its own.
func TestDependsOn(t *testing.T) {
	stateOf := func(typ, name string) (inventory.App, []*unstructured.Unstructured) {
		app := webApp(typ)
		for _, st := range states(t, app) {
			if st.name == name {
				return app, render(t, app, st.rel)
			}
		}
		t.Fatalf("%s has no state %s", typ, name)
		return app, nil
	}
	blue := []string{"Service/web-blue", "Deployment/web-blue"}
	green := []string{"Service/web-green", "Deployment/web-green"}
	tests := []struct {
		typ, state, obj string
		want            []string
	}{
		{inventory.StrategyRolling, "deployed", "IngressRoute/web", []string{"Service/web", "Deployment/web"}},
		{inventory.StrategyBlueGreen, "candidate", "IngressRoute/web", blue},
		{inventory.StrategyBlueGreen, "candidate", "IngressRoute/web-preview", green},
		{inventory.StrategyBlueGreen, "promoted", "IngressRoute/web", green},
		{inventory.StrategyCanary, "fresh", "TraefikService/web", blue},
		{inventory.StrategyCanary, "fresh", "IngressRoute/web", append(slices.Clone(blue), "TraefikService/web")},
		{inventory.StrategyCanary, "step-1", "TraefikService/web", append(slices.Clone(blue), green...)},
		{inventory.StrategyCanary, "step-1", "IngressRoute/web", append(append(slices.Clone(blue), green...), "TraefikService/web")},
		// At 100% the stable slot gets no requests, so the route needs it no more.
		{inventory.StrategyCanary, "step-3", "TraefikService/web", green},
		{inventory.StrategyAB, "candidate", "IngressRoute/web", append(slices.Clone(blue), green...)},
		{inventory.StrategyShadow, "candidate", "TraefikService/web", append(slices.Clone(blue), green...)},
		{inventory.StrategyShadow, "candidate", "Deployment/web-green", nil},
	}
	for _, tt := range tests {
		t.Run(tt.typ+"/"+tt.state+"/"+tt.obj, func(t *testing.T) {
			_, objs := stateOf(tt.typ, tt.state)
			got := keysOf(apps.DependsOn(find(t, objs, tt.obj), objs))
			want := slices.Clone(tt.want)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("%s depends on\n  %v\nwant\n  %v", tt.obj, got, want)
			}
		})
	}

	t.Run("the env Secret comes before the Deployments", func(t *testing.T) {
		app := ghost()
		app.Env["DB_PASSWORD"] = "x"
		rel, _ := apps.Deploy(app, apps.Release{})
		objs, err := apps.Render(app, rel, apps.Options{SecretEnv: []string{"DB_PASSWORD"}})
		if err != nil {
			t.Fatal(err)
		}
		if got := keysOf(apps.DependsOn(find(t, objs, "Deployment/ghost"), objs)); !slices.Equal(got, []string{"Secret/ghost-env"}) {
			t.Fatalf("Deployment/ghost depends on %v, want the Secret", got)
		}
	})
}

// TestPromoteMovesOnlyRoutes: across every step of every strategy, nothing
// a Traefik object depends on changes, unless the step creates it. A
// promote only moves routes, role Services and deletes: a slot's
// Deployment and Service stay as they are (no track label flips on
// them), so a deliverer moves the route at once instead of waiting for
// the update of an object that routes through it.
func TestPromoteMovesOnlyRoutes(t *testing.T) {
	for _, c := range renderCases() {
		if s, _ := apps.StrategyFor(c.app.Strategy.Type); !s.SideBySide() {
			continue // the release is the Deployment's own rolling update
		}
		for _, tr := range transitions(t, c.app) {
			before := byKey(render(t, c.app, tr.from.rel))
			after := render(t, c.app, tr.to.rel)
			for _, o := range after {
				if o.GetAPIVersion() != apps.TraefikAPIVersion {
					continue
				}
				for _, d := range apps.DependsOn(o, after) {
					if d.GetAPIVersion() == apps.TraefikAPIVersion {
						continue // routing moves with the route
					}
					prev, ok := before[apps.Key(d)]
					if ok && !reflect.DeepEqual(prev.Object, d.Object) {
						t.Errorf("%s %s: %s depends on %s, which changes", c.name, tr.name, apps.Key(o), apps.Key(d))
					}
				}
			}
		}
	}
}

// TestRoutingObjectsStable: the route clients use is never removed,
// renamed or replaced by another during a release: the IngressRoute named
// after the app, and the TraefikServices it names, exist in every state
// under the same names, so a deliverer only ever updates them in place.
func TestRoutingObjectsStable(t *testing.T) {
	for _, c := range renderCases() {
		if c.app.Expose == nil || c.app.Expose.Host == "" {
			continue
		}
		main := "IngressRoute/" + c.app.Name
		for _, tr := range transitions(t, c.app) {
			from, to := render(t, c.app, tr.from.rel), render(t, c.app, tr.to.rel)
			fromKeys, toKeys := byKey(from), byKey(to)
			if fromKeys[main] == nil || toKeys[main] == nil {
				t.Fatalf("%s %s: %s missing (before %v, after %v)", c.name, tr.name, main, fromKeys[main] != nil, toKeys[main] != nil)
			}
			for _, d := range apps.DependsOn(toKeys[main], to) {
				if d.GetKind() == "TraefikService" && fromKeys[apps.Key(d)] == nil {
					t.Errorf("%s %s: the main route moves to %s, which did not exist before: a new name for the route", c.name, tr.name, apps.Key(d))
				}
			}
			for k, o := range fromKeys {
				if o.GetKind() == "TraefikService" && toKeys[k] == nil {
					t.Errorf("%s %s: %s is deleted", c.name, tr.name, k)
				}
			}
		}
	}
}

// TestRouteMarkers: every IngressRoute ends with its marker, for Traefik's
// noop service, whose path changes exactly when what the route sends
// requests to changes (its rules, or the TraefikServices it names).
func TestRouteMarkers(t *testing.T) {
	routesOf := func(o *unstructured.Unstructured) []any {
		rs, _, _ := unstructured.NestedSlice(o.Object, "spec", "routes")
		return rs
	}
	// what is the route without its marker, and the TraefikServices it names.
	what := func(o *unstructured.Unstructured, objs []*unstructured.Unstructured) []any {
		rs := routesOf(o)
		out := []any{rs[:len(rs)-1]}
		for _, d := range apps.DependsOn(o, objs) {
			if d.GetKind() == "TraefikService" {
				out = append(out, d.Object["spec"])
			}
		}
		return out
	}
	for _, c := range renderCases() {
		for _, st := range states(t, c.app) {
			objs := render(t, c.app, st.rel)
			markers := apps.RouteMarkers(objs)
			var routes []string
			for _, o := range objs {
				if o.GetKind() == "IngressRoute" {
					routes = append(routes, o.GetName())
				}
			}
			if len(markers) != len(routes) {
				t.Fatalf("%s %s: markers %+v for IngressRoutes %v", c.name, st.name, markers, routes)
			}
			for i, m := range markers {
				o := find(t, objs, "IngressRoute/"+m.Route)
				rs := routesOf(o)
				last := rs[len(rs)-1].(map[string]any)
				svc := last["services"].([]any)[0].(map[string]any)
				if m.Route != routes[i] || m.Host != c.app.Expose.Host || !strings.HasPrefix(m.Path, apps.MarkerPathPrefix+m.Route+"/") ||
					last["priority"] != int64(apps.PriorityMarker) || svc["kind"] != "TraefikService" || svc["name"] != apps.MarkerService {
					t.Errorf("%s %s: marker %+v, last route %v", c.name, st.name, m, last)
				}
			}
		}
		for _, tr := range transitions(t, c.app) {
			from, to := render(t, c.app, tr.from.rel), render(t, c.app, tr.to.rel)
			before := map[string]apps.RouteMarker{}
			for _, m := range apps.RouteMarkers(from) {
				before[m.Route] = m
			}
			for _, m := range apps.RouteMarkers(to) {
				prev, ok := before[m.Route]
				if !ok {
					continue
				}
				changed := !reflect.DeepEqual(what(find(t, from, "IngressRoute/"+m.Route), from), what(find(t, to, "IngressRoute/"+m.Route), to))
				if changed != (prev.Path != m.Path) {
					t.Errorf("%s %s: IngressRoute %s: what it reaches changed %v, marker %s → %s", c.name, tr.name, m.Route, changed, prev.Path, m.Path)
				}
			}
		}
	}
}
