package apps_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/inventory"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

func typed[T any](t *testing.T, o *unstructured.Unstructured) T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &v, true); err != nil {
		t.Fatalf("%s: %v", apps.Key(o), err)
	}
	return v
}

// TestZeroDowntimeSettings walks every Deployment of every strategy and
// release state and fails on any missing zero-downtime setting.
func TestZeroDowntimeSettings(t *testing.T) {
	deployments := 0
	for _, c := range renderCases() {
		for _, st := range states(t, c.app) {
			objs := render(t, c.app, st.rel)
			var pdbs []policyv1.PodDisruptionBudget
			for _, o := range objs {
				if o.GetKind() == "PodDisruptionBudget" {
					pdbs = append(pdbs, typed[policyv1.PodDisruptionBudget](t, o))
				}
			}
			for _, o := range objs {
				if o.GetKind() != "Deployment" {
					continue
				}
				deployments++
				d := typed[appsv1.Deployment](t, o)
				for _, miss := range zeroDowntimeMisses(c.app, d, pdbs) {
					t.Errorf("%s %s: Deployment %s: %s", c.name, st.name, d.Name, miss)
				}
			}
		}
	}
	if deployments < 50 {
		t.Fatalf("walked only %d Deployments", deployments)
	}
	t.Logf("%d Deployments checked", deployments)
}

func zeroDowntimeMisses(app inventory.App, d appsv1.Deployment, pdbs []policyv1.PodDisruptionBudget) []string {
	var miss []string
	add := func(format string, args ...any) { miss = append(miss, fmt.Sprintf(format, args...)) }
	pod := d.Spec.Template.Spec
	if len(pod.Containers) == 0 {
		return []string{"no container"}
	}
	for _, c := range pod.Containers {
		r, l := c.ReadinessProbe, c.LivenessProbe
		switch {
		case r == nil:
			add("container %s has no readiness probe", c.Name)
		case l == nil:
			add("container %s has no liveness probe", c.Name)
		case reflect.DeepEqual(r, l):
			add("container %s: readiness and liveness probes are the same", c.Name)
		case l.HTTPGet != nil || l.Exec != nil || l.GRPC != nil:
			// Only a TCP connect cannot fail because a dependency is down.
			add("container %s: liveness probe must be a TCP check, not one that may depend on other services", c.Name)
		}
		if r != nil && (app.Expose != nil && app.Expose.Host != "" || app.Strategy.Check != "") {
			want := app.Strategy.Check
			if want == "" {
				want = "/"
			}
			if r.HTTPGet == nil || r.HTTPGet.Path != want {
				add("container %s: an HTTP app's readiness must GET %s", c.Name, want)
			}
		}
		if c.StartupProbe == nil {
			add("container %s has no startup probe (slow starters would be killed by liveness)", c.Name)
		}
		var pause int64
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
			add("container %s has no preStop sleep", c.Name)
		} else if pause = c.Lifecycle.PreStop.Sleep.Seconds; pause < 5 {
			add("container %s: preStop pause %ds is too short for endpoints to drop the pod", c.Name, pause)
		}
		if g := pod.TerminationGracePeriodSeconds; g == nil || *g <= pause {
			add("terminationGracePeriodSeconds %v is not above the preStop pause %ds", g, pause)
		}
	}
	switch s := d.Spec.Strategy; {
	case app.Strategy.Type == inventory.StrategyRecreate:
		if s.Type != appsv1.RecreateDeploymentStrategyType {
			add("recreate must use the Recreate strategy, has %q", s.Type)
		}
	case s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0:
		add("must roll with maxUnavailable 0, has %+v", s)
	}
	covered := 0
	for _, p := range pdbs {
		if selects(p.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			covered++
			if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
				add("PodDisruptionBudget %s has no budget", p.Name)
			}
			// With one replica a minAvailable 1 budget would block every drain.
			if p.Spec.MinAvailable != nil && p.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
				add("PodDisruptionBudget %s never allows an eviction", p.Name)
			}
		}
	}
	if covered != 1 {
		add("its pods are covered by %d PodDisruptionBudgets, want exactly 1", covered)
	}
	if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		add("selector %v does not select its own pods %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}
	if _, ok := d.Spec.Template.Labels[apps.LabelTrack]; ok {
		add("pods carry %s, which changes on promote: a promote would restart them", apps.LabelTrack)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		add("service links are on: other apps' Services would inject FOO_PORT variables")
	}
	return miss
}

// TestSelectorsNeverChange: across every state of a release, a Deployment
// keeps its selector and pod labels (the selector is immutable, and a
// template change would restart pods that serve traffic), and a slot keeps
// its image until the slot is removed, except by a new deploy.
func TestSelectorsNeverChange(t *testing.T) {
	for _, c := range renderCases() {
		selectors := map[string]string{}
		for _, st := range states(t, c.app) {
			for _, o := range render(t, c.app, st.rel) {
				if o.GetKind() != "Deployment" {
					continue
				}
				d := typed[appsv1.Deployment](t, o)
				got := fmt.Sprint(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
				if prev, ok := selectors[d.Name]; ok && prev != got {
					t.Errorf("%s %s: Deployment %s changed selector or pod labels:\n was %s\n now %s", c.name, st.name, d.Name, prev, got)
				}
				selectors[d.Name] = got
			}
		}
	}
}

// TestPromoteRestartsNothing: promoting a side-by-side release only moves
// traffic: every Deployment that exists before and after keeps its pod
// template, so no pod restarts.
func TestPromoteRestartsNothing(t *testing.T) {
	for _, c := range renderCases() {
		s, _ := apps.StrategyFor(c.app.Strategy.Type)
		if !s.SideBySide() {
			continue
		}
		sts := states(t, c.app)
		for i := 1; i < len(sts); i++ {
			if sts[i].name == "rolled-back" {
				continue // from the candidate state, not from its predecessor
			}
			before := templates(t, render(t, c.app, sts[i-1].rel))
			if sts[i].name == "candidate" {
				continue // deploy starts the candidate; it may not touch stable
			}
			for name, tpl := range templates(t, render(t, c.app, sts[i].rel)) {
				if prev, ok := before[name]; ok && !reflect.DeepEqual(prev, tpl) {
					t.Errorf("%s: %s → %s changes the pods of %s", c.name, sts[i-1].name, sts[i].name, name)
				}
			}
		}
		// Deploy and rollback leave the stable slot's pods alone too.
		fresh := templates(t, render(t, c.app, sts[0].rel))
		for _, name := range []string{"candidate", "rolled-back"} {
			idx := -1
			for j, st := range sts {
				if st.name == name {
					idx = j
				}
			}
			for dn, tpl := range templates(t, render(t, c.app, sts[idx].rel)) {
				if prev, ok := fresh[dn]; ok && !reflect.DeepEqual(prev, tpl) {
					t.Errorf("%s: %s changes the stable pods of %s", c.name, name, dn)
				}
			}
		}
	}
}

func templates(t *testing.T, objs []*unstructured.Unstructured) map[string]corev1.PodTemplateSpec {
	out := map[string]corev1.PodTemplateSpec{}
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			out[o.GetName()] = typed[appsv1.Deployment](t, o).Spec.Template
		}
	}
	return out
}

// TestTrafficReachesReadyPods: every Service selects the pods of exactly
// one rendered Deployment (or all of an in-place app's), every backend a
// Traefik object names is rendered too, and Traefik objects come in later
// waves than the Deployments whose pods they reach (Traefik refuses a
// TraefikService whose Service has no ready endpoint).
func TestTrafficReachesReadyPods(t *testing.T) {
	for _, c := range renderCases() {
		for _, st := range states(t, c.app) {
			objs := render(t, c.app, st.rel)
			pods := podLabels(objs)
			names := map[string]bool{}
			for _, o := range objs {
				names[apps.Key(o)] = true
			}
			for _, o := range objs {
				where := fmt.Sprintf("%s %s: %s", c.name, st.name, apps.Key(o))
				switch o.GetKind() {
				case "Service":
					sel, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector")
					n := 0
					for _, l := range pods {
						if selects(sel, l) {
							n++
						}
					}
					if n != 1 {
						t.Errorf("%s selects the pods of %d Deployments (%v), want 1", where, n, keys(pods))
					}
				case "TraefikService", "IngressRoute":
					if apps.Wave(o) <= apps.WaveWorkload {
						t.Errorf("%s is in wave %d, with the Deployments", where, apps.Wave(o))
					}
					for _, ref := range backends(o) {
						if ref == "TraefikService/"+apps.MarkerService {
							continue // Traefik's own
						}
						if !names[ref] {
							t.Errorf("%s sends requests to %s, which is not rendered", where, ref)
						}
					}
				}
			}
		}
	}
}

// backends lists Kind/name of every service a Traefik object names.
func backends(o *unstructured.Unstructured) []string {
	var out []string
	ref := func(m map[string]any) { out = append(out, fmt.Sprintf("%s/%s", m["kind"], m["name"])) }
	if rs, ok, _ := unstructured.NestedSlice(o.Object, "spec", "routes"); ok {
		for _, r := range rs {
			for _, s := range r.(map[string]any)["services"].([]any) {
				ref(s.(map[string]any))
			}
		}
	}
	if ws, ok, _ := unstructured.NestedSlice(o.Object, "spec", "weighted", "services"); ok {
		for _, s := range ws {
			ref(s.(map[string]any))
		}
	}
	if m, ok, _ := unstructured.NestedMap(o.Object, "spec", "mirroring"); ok {
		ref(m)
		ms, _, _ := unstructured.NestedSlice(m, "mirrors")
		for _, s := range ms {
			ref(s.(map[string]any))
		}
	}
	return out
}
