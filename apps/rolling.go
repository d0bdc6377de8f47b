package apps

import (
	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// rolling is Kubernetes' own rolling update, one surge pod at a time and
// never below the wanted count (maxUnavailable 0), so with readiness probes
// and the preStop pause no request fails.
type rolling struct{}

func (rolling) Type() string                                 { return inventory.StrategyRolling }
func (rolling) SideBySide() bool                             { return false }
func (rolling) Check(inventory.App) []*Problem               { return nil }
func (rolling) Promote(_ inventory.App, rel Release) Release { return rel }
func (rolling) Weights(inventory.App, Release) Weights       { return fullWeights }
func (rolling) Render(app inventory.App, rel Release, opts Options) []*unstructured.Unstructured {
	return newBuilder(app, opts).inPlace(rel, rollingUpdate())
}
