package apps

import (
	"strings"

	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Strategy is one way of shipping a new version. Each lives in its own file.
type Strategy interface {
	// Type is the inventory's strategy.type.
	Type() string
	// SideBySide reports whether a new image runs as a candidate beside the
	// stable one (and Release.Colour names the stable slot), rather than
	// replacing it at once.
	SideBySide() bool
	// Check returns what in app this strategy cannot render.
	Check(app inventory.App) []*Problem
	// Promote advances a release that has a candidate by one step.
	Promote(app inventory.App, rel Release) Release
	// Weights is how client requests are split in rel.
	Weights(app inventory.App, rel Release) Weights
	// Render returns the app's Deployments, Services and traffic objects
	// for a checked app and a release normalised by Deploy.
	Render(app inventory.App, rel Release, opts Options) []*unstructured.Unstructured
}

var strategies = map[string]Strategy{
	inventory.StrategyRecreate:  recreate{},
	inventory.StrategyRolling:   rolling{},
	inventory.StrategyBlueGreen: blueGreen{},
	inventory.StrategyCanary:    canary{},
	inventory.StrategyAB:        ab{},
	inventory.StrategyShadow:    shadow{},
}

// StrategyFor returns the strategy named by an inventory strategy.type.
func StrategyFor(typ string) (Strategy, bool) {
	s, ok := strategies[typ]
	return s, ok
}

// strategyOf is the app's strategy; an unset type is rolling, as in the
// inventory's defaults.
func strategyOf(app inventory.App) (Strategy, error) {
	typ := strings.ToLower(app.Strategy.Type)
	if typ == "" {
		typ = inventory.StrategyRolling
	}
	s, ok := strategies[typ]
	if !ok {
		return nil, problem(app, "strategy.type", "unknown strategy %q: use %s", app.Strategy.Type, strings.Join(inventory.Strategies, ", "))
	}
	return s, nil
}

// fullWeights is the split when clients only ever reach the stable version.
var fullWeights = Weights{Stable: 100}
