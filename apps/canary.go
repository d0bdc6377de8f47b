package apps

import (
	"fmt"

	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// canary sends strategy.steps[step] percent of the requests to the
// candidate through a weighted TraefikService, one step further per
// promote; the promote after the last step (100) makes the candidate
// stable. The candidate runs with the app's full replica count, so every
// step has the capacity of the next.
type canary struct{}

func (canary) Type() string     { return inventory.StrategyCanary }
func (canary) SideBySide() bool { return true }

func (canary) Check(app inventory.App) []*Problem {
	b := &builder{app: app}
	ps := needsHost(b, inventory.StrategyCanary)
	steps := app.Strategy.Steps
	if len(steps) == 0 {
		return append(ps, problem(app, "strategy.steps", "canary needs traffic steps, increasing percentages ending at 100, like [5, 25, 50, 100]"))
	}
	for i, s := range steps {
		switch {
		case s < 1 || s > 100:
			ps = append(ps, problem(app, fmt.Sprintf("strategy.steps[%d]", i), "%d is not a percentage from 1 to 100", s))
		case i > 0 && s <= steps[i-1]:
			ps = append(ps, problem(app, fmt.Sprintf("strategy.steps[%d]", i), "%d does not increase on the step before (%d): steps must be increasing percentages", s, steps[i-1]))
		}
	}
	if last := steps[len(steps)-1]; last != 100 {
		ps = append(ps, problem(app, fmt.Sprintf("strategy.steps[%d]", len(steps)-1), "the last step is %d: canary steps must end at 100 (the full release)", last))
	}
	return ps
}

func (canary) Promote(app inventory.App, rel Release) Release {
	if rel.Step+1 < len(app.Strategy.Steps) {
		rel.Step++
		return rel
	}
	return finish(rel)
}

func (canary) Weights(app inventory.App, rel Release) Weights {
	if rel.Candidate == "" || rel.Step < 0 || rel.Step >= len(app.Strategy.Steps) {
		return fullWeights
	}
	p := app.Strategy.Steps[rel.Step]
	return Weights{Stable: 100 - p, Candidate: p}
}

func (c canary) Render(app inventory.App, rel Release, opts Options) []*unstructured.Unstructured {
	b := newBuilder(app, opts)
	stable := colourOr(rel.Colour)
	w := c.Weights(app, rel)
	return append(b.sideBySide(rel),
		b.weighted(app.Name,
			weight{svc(b.slotName(stable)), w.Stable},
			weight{svc(b.slotName(stable.Other())), w.Candidate}),
		b.ingressRoute(app.Name, "", b.mainRoute(traefikSvc(app.Name))),
	)
}
