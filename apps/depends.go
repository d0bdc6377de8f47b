package apps

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// DependsOn returns the objects of objs (one app's Render, in its order)
// that must be applied, and ready, before obj.
//
// A Traefik object needs exactly what it sends requests to: the
// TraefikServices and Services it names and the Deployments behind those
// Services (their pods ready), transitively. Nothing else: a route must
// move as soon as what it moves to is ready, not after every other change
// of the same step (a promote also changes the <app> Service's selector,
// which the Pulumi provider takes seconds to call done). Every other
// object needs every object of an earlier wave (the env Secret before the
// Deployments).
//
// The Pulumi deliverer registers these as dependencies; Argo CD applies
// whole waves, which holds the same order, only coarser.
func DependsOn(obj *unstructured.Unstructured, objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	if !isTraffic(obj) {
		var out []*unstructured.Unstructured
		for _, o := range objs {
			if Wave(o) < Wave(obj) {
				out = append(out, o)
			}
		}
		return out
	}
	need := map[string]bool{}
	var visit func(o *unstructured.Unstructured)
	visit = func(o *unstructured.Unstructured) {
		for _, ref := range references(o) {
			for _, t := range objs {
				if t.GetKind() != ref.kind || t.GetName() != ref.name || need[Key(t)] {
					continue
				}
				need[Key(t)] = true
				switch t.GetKind() {
				case "TraefikService":
					visit(t)
				case "Service":
					for _, d := range objs {
						if d.GetKind() == "Deployment" && selectsPods(t, d) {
							need[Key(d)] = true
						}
					}
				}
			}
		}
	}
	visit(obj)
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if need[Key(o)] && o != obj {
			out = append(out, o)
		}
	}
	return out
}

func isTraffic(o *unstructured.Unstructured) bool {
	return o.GetAPIVersion() == TraefikAPIVersion && (o.GetKind() == "IngressRoute" || o.GetKind() == "TraefikService")
}

// references are the Services and TraefikServices a Traefik object names.
func references(o *unstructured.Unstructured) []backend {
	var refs []backend
	add := func(v any) {
		m, _ := v.(map[string]any)
		name, _ := m["name"].(string)
		if name == "" {
			return
		}
		kind, _ := m["kind"].(string)
		if kind == "" {
			kind = "Service"
		}
		refs = append(refs, backend{kind: kind, name: name})
	}
	switch o.GetKind() {
	case "IngressRoute":
		rs, _, _ := unstructured.NestedSlice(o.Object, "spec", "routes")
		for _, r := range rs {
			m, _ := r.(map[string]any)
			svcs, _ := m["services"].([]any)
			for _, s := range svcs {
				add(s)
			}
		}
	case "TraefikService":
		ws, _, _ := unstructured.NestedSlice(o.Object, "spec", "weighted", "services")
		for _, w := range ws {
			add(w)
		}
		if m, ok, _ := unstructured.NestedMap(o.Object, "spec", "mirroring"); ok {
			add(m)
			ms, _ := m["mirrors"].([]any)
			for _, x := range ms {
				add(x)
			}
		}
	}
	return refs
}

// selectsPods reports whether Service svc selects the pods of Deployment d.
func selectsPods(svc, d *unstructured.Unstructured) bool {
	sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	labels, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
