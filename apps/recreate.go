package apps

import (
	"github.com/homelab/rack/inventory"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// recreate stops every old pod before starting the new ones: a gap in
// service, but never two versions at once, which is what a database on its
// volume needs.
type recreate struct{}

func (recreate) Type() string                                 { return inventory.StrategyRecreate }
func (recreate) SideBySide() bool                             { return false }
func (recreate) Check(inventory.App) []*Problem               { return nil }
func (recreate) Promote(_ inventory.App, rel Release) Release { return rel }
func (recreate) Weights(inventory.App, Release) Weights       { return fullWeights }
func (recreate) Render(app inventory.App, rel Release, opts Options) []*unstructured.Unstructured {
	return newBuilder(app, opts).inPlace(rel, appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType})
}
