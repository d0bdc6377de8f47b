package apps_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// state is one release state of an app, in the order a user reaches them.
type state struct {
	name string
	rel  apps.Release
}

// states walks app through every state its strategy has: fresh, the
// candidate deployed, each canary step, promoted (flipped, released) and
// rolled back. The in-place strategies have fresh and deployed.
func states(t *testing.T, app inventory.App) []state {
	t.Helper()
	must := func(r apps.Release, err error) apps.Release {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	v1, v2 := app, app
	v2.Image = strings.TrimSuffix(app.Image, ":1") + ":2"
	fresh := must(apps.Deploy(v1, apps.Release{}))
	out := []state{{"fresh", fresh}}
	cand := must(apps.Deploy(v2, fresh))
	s, _ := apps.StrategyFor(app.Strategy.Type)
	if !s.SideBySide() {
		return append(out, state{"deployed", cand})
	}
	out = append(out, state{"candidate", cand})
	rel := cand
	for i := 1; i < len(app.Strategy.Steps); i++ {
		rel = must(apps.Promote(v2, rel))
		out = append(out, state{fmt.Sprintf("step-%d", i), rel})
	}
	out = append(out, state{"promoted", must(apps.Promote(v2, rel))})
	out = append(out, state{"rolled-back", must(apps.Rollback(v2, cand))})
	return out
}

// renderCase is one app of the tests, rendered in each of its states.
type renderCase struct {
	name string
	app  inventory.App
}

func renderCases() []renderCase {
	var cs []renderCase
	for _, typ := range inventory.Strategies {
		cs = append(cs, renderCase{typ + "-web", webApp(typ)})
	}
	lb := func(typ string) inventory.App {
		a := webApp(typ)
		a.Name, a.Image, a.Expose, a.Strategy.Check = "frontendweb", "frontendweb:1", &inventory.Expose{}, ""
		return a
	}
	cookie := webApp(inventory.StrategyAB)
	cookie.Strategy.Match = &inventory.Match{Cookie: "variant", Value: "b.1"}
	internal := webApp(inventory.StrategyBlueGreen)
	internal.Name, internal.Image, internal.Expose, internal.Strategy.Check = "api", "api:1", nil, ""
	return append(cs,
		renderCase{"recreate-lb", lb(inventory.StrategyRecreate)},
		renderCase{"rolling-lb", lb(inventory.StrategyRolling)},
		renderCase{"blue-green-lb", lb(inventory.StrategyBlueGreen)},
		renderCase{"blue-green-internal", internal},
		renderCase{"ab-cookie", cookie},
		renderCase{"recreate-postgresql", postgresql()},
		renderCase{"rolling-ghost", ghost()},
	)
}

func postgresql() inventory.App {
	return inventory.App{
		Name: "postgresql", Image: "postgres:1", Port: 5432, Replicas: 1,
		Storage:  &inventory.AppStorage{Size: "1Gi", Class: "longhorn", Path: "/var/lib/postgresql/data"},
		Env:      map[string]string{"POSTGRES_DB": "ghost", "PGDATA": "/var/lib/postgresql/data/pgdata", "POSTGRES_USER": "ghost"},
		Strategy: inventory.Strategy{Type: inventory.StrategyRecreate},
	}
}

func ghost() inventory.App {
	return inventory.App{
		Name: "ghost", Image: "ghost:1", Port: 2368,
		Expose:   &inventory.Expose{Host: "blog.home.arpa"},
		Env:      map[string]string{"url": "http://blog.home.arpa", "NODE_ENV": "production"},
		Strategy: inventory.Strategy{Type: inventory.StrategyRolling},
	}
}

func render(t *testing.T, app inventory.App, rel apps.Release) []*unstructured.Unstructured {
	t.Helper()
	objs, err := apps.Render(app, rel, apps.Options{})
	if err != nil {
		t.Fatalf("render %s %+v: %v", app.Name, rel, err)
	}
	return objs
}

// summary is one line per object: what a reader checks in a table.
func summary(o *unstructured.Unstructured) string {
	name := o.GetKind() + " " + o.GetName()
	str := func(path ...string) string { s, _, _ := unstructured.NestedString(o.Object, path...); return s }
	num := func(path ...string) int64 { n, _, _ := unstructured.NestedInt64(o.Object, path...); return n }
	switch o.GetKind() {
	case "Deployment":
		ctrs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		image := ctrs[0].(map[string]any)["image"]
		if track := o.GetLabels()[apps.LabelTrack]; track != "" {
			name += " " + track
		}
		return fmt.Sprintf("%s %s x%d %s", name, image, num("spec", "replicas"), str("spec", "strategy", "type"))
	case "Service":
		sel, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector")
		to := sel[apps.LabelColour]
		if to == "" {
			to = "all"
		}
		return fmt.Sprintf("%s %s -> %s", name, str("spec", "type"), to)
	case "PodDisruptionBudget":
		mu, _, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "maxUnavailable")
		return fmt.Sprintf("%s maxUnavailable=%v", name, mu)
	case "PersistentVolumeClaim":
		return fmt.Sprintf("%s %s %s", name, str("spec", "resources", "requests", "storage"), str("spec", "storageClassName"))
	case "TraefikService":
		if ws, ok, _ := unstructured.NestedSlice(o.Object, "spec", "weighted", "services"); ok {
			var parts []string
			for _, w := range ws {
				m := w.(map[string]any)
				parts = append(parts, fmt.Sprintf("%s=%d", m["name"], m["weight"]))
			}
			return name + " weighted " + strings.Join(parts, " ")
		}
		s := name + " mirroring " + str("spec", "mirroring", "name")
		ms, _, _ := unstructured.NestedSlice(o.Object, "spec", "mirroring", "mirrors")
		for _, m := range ms {
			mm := m.(map[string]any)
			s += fmt.Sprintf(" mirror %s=%d%%", mm["name"], mm["percent"])
		}
		return s
	case "IngressRoute":
		rs, _, _ := unstructured.NestedSlice(o.Object, "spec", "routes")
		var parts []string
		for _, r := range rs {
			m := r.(map[string]any)
			svc := m["services"].([]any)[0].(map[string]any)
			if svc["name"] == apps.MarkerService {
				// The path's digest: TestRouteMarkers.
				parts = append(parts, "marker")
				continue
			}
			p := m["match"].(string)
			if pr, ok := m["priority"]; ok {
				p += fmt.Sprintf(" [%d]", pr)
			}
			parts = append(parts, fmt.Sprintf("%s -> %s/%s", p, svc["kind"], svc["name"]))
		}
		return name + ": " + strings.Join(parts, "; ")
	}
	return name
}

func summaries(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, summary(o))
	}
	return out
}

// pods are the labels of the pods an object's Deployments run, by name.
func podLabels(objs []*unstructured.Unstructured) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			l, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
			out[o.GetName()] = l
		}
	}
	return out
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

func keys[M ~map[string]V, V any](m M) []string { return slices.Sorted(maps.Keys(m)) }

var unstructuredSlice = unstructured.NestedSlice
