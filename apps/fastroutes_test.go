package apps_test

import (
	"testing"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/api/equality"
)

// TestFastRoutes: across every strategy's transitions, the routes may go
// first exactly when the step only moves traffic between what already
// runs (a canary step, a flip, a rollback), never when they move onto
// something the step creates or changes (a deploy); and what they send
// traffic to is unchanged by the step or goes before them.
func TestFastRoutes(t *testing.T) {
	want := map[string]map[string]bool{ // strategy -> transition -> routes go first
		inventory.StrategyCanary: {
			"fresh→candidate": false, "candidate→step-1": true, "step-1→step-2": true, "step-2→step-3": true,
			// At the last step every request already goes to the candidate.
			"step-3→promoted": false, "candidate→rolled-back": true,
		},
		// The main route never left the stable colour; only the preview goes.
		inventory.StrategyBlueGreen: {"fresh→candidate": false, "candidate→promoted": true, "candidate→rolled-back": false},
		inventory.StrategyAB:        {"fresh→candidate": false, "candidate→promoted": true, "candidate→rolled-back": true},
		inventory.StrategyShadow:    {"fresh→candidate": false, "candidate→promoted": true, "candidate→rolled-back": true},
		inventory.StrategyRolling:   {"fresh→deployed": false},
		inventory.StrategyRecreate:  {"fresh→deployed": false},
	}
	for typ, byStep := range want {
		app := webApp(typ)
		seen := map[string]bool{}
		for _, tr := range transitions(t, app) {
			seen[tr.name] = true
			prev, next := render(t, app, tr.from.rel), render(t, app, tr.to.rel)
			fast := apps.FastRoutes(prev, next)
			if got := len(fast) > 0; got != byStep[tr.name] {
				t.Errorf("%s %s: routes go first = %v (%v), want %v", typ, tr.name, got, keysOf(fast), byStep[tr.name])
			}
			before := byKey(prev)
			done := map[string]bool{}
			for _, r := range fast {
				if before[apps.Key(r)] == nil {
					t.Errorf("%s %s: %s goes first but is new", typ, tr.name, apps.Key(r))
				}
				for _, d := range apps.DependsOn(r, next) {
					old := before[apps.Key(d)]
					same := old != nil && equality.Semantic.DeepEqual(old.Object, d.Object)
					if !same && !done[apps.Key(d)] {
						t.Errorf("%s %s: %s goes first, but %s, which it sends traffic to, changes and is not applied before it", typ, tr.name, apps.Key(r), apps.Key(d))
					}
				}
				done[apps.Key(r)] = true
			}
			for _, d := range apps.Deps(fast, next) {
				if d.GetKind() != "Service" && d.GetKind() != "Deployment" {
					t.Errorf("%s %s: a route depends on %s", typ, tr.name, apps.Key(d))
				}
			}
		}
		for step := range byStep {
			if !seen[step] {
				t.Errorf("%s: no transition %s (have %v)", typ, step, seen)
			}
		}
	}
}
