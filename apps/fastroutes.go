package apps

import (
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// FastRoutes are the Traefik objects of next (one app's Render) that a
// deliverer may apply before the rest of the step, because the step only
// moves traffic between what already runs: each differs from its prev
// rendering and is updated in place (prev has it too), and everything it
// sends traffic to (DependsOn) is either rendered the same in both, so the
// step leaves it alone, or is itself one of them. A promote or rollback
// between ready versions is such a step; a deploy whose route moves onto a
// new Deployment is not.
//
// All or nothing: when one changed Traefik object cannot go first, none
// does (nil), since routes that reference each other move together. The
// result is in apply order, what an object sends traffic to first. Whether
// what the routes send traffic to is ready is the caller's to check, on
// the cluster: Deps lists it.
func FastRoutes(prev, next []*unstructured.Unstructured) []*unstructured.Unstructured {
	before := map[string]*unstructured.Unstructured{}
	for _, o := range prev {
		before[Key(o)] = o
	}
	changed := map[string]bool{}
	var routes []*unstructured.Unstructured
	for _, o := range next {
		if !isTraffic(o) {
			continue
		}
		old, ok := before[Key(o)]
		if ok && equality.Semantic.DeepEqual(old.Object, o.Object) {
			continue
		}
		if !ok {
			return nil // a new route object: only the deliverer creates it
		}
		changed[Key(o)] = true
		routes = append(routes, o)
	}
	for _, r := range routes {
		for _, d := range DependsOn(r, next) {
			if changed[Key(d)] {
				continue
			}
			old, ok := before[Key(d)]
			if !ok || !equality.Semantic.DeepEqual(old.Object, d.Object) {
				return nil
			}
		}
	}
	// What a route sends traffic to goes first.
	var ordered []*unstructured.Unstructured
	done := map[string]bool{}
	for len(ordered) < len(routes) {
		progress := false
		for _, r := range routes {
			if done[Key(r)] {
				continue
			}
			ready := true
			for _, d := range DependsOn(r, next) {
				if changed[Key(d)] && !done[Key(d)] {
					ready = false
				}
			}
			if ready {
				done[Key(r)] = true
				ordered = append(ordered, r)
				progress = true
			}
		}
		if !progress {
			return nil // a cycle: leave the order to the deliverer
		}
	}
	return ordered
}

// Deps are the objects of next that the routes send traffic to and that
// are not routes themselves: the Services and Deployments that must be
// ready before the routes move.
func Deps(routes, next []*unstructured.Unstructured) []*unstructured.Unstructured {
	seen := map[string]bool{}
	var out []*unstructured.Unstructured
	for _, r := range routes {
		for _, d := range DependsOn(r, next) {
			if isTraffic(d) || seen[Key(d)] {
				continue
			}
			seen[Key(d)] = true
			out = append(out, d)
		}
	}
	return out
}
