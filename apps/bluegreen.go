package apps

import (
	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// blueGreen runs the candidate in the idle colour, reachable only through
// the preview (the <app>-preview Service, and the preview header on the
// app's host), and flips every client to it in one promote. It needs no
// Traefik: without a host the flip is the <app> Service's selector (a
// MetalLB LoadBalancer or a ClusterIP). With a host, Traefik routes to the
// active colour's own Service, so the flip is one atomic route change.
type blueGreen struct{}

func (blueGreen) Type() string                   { return inventory.StrategyBlueGreen }
func (blueGreen) SideBySide() bool               { return true }
func (blueGreen) Check(inventory.App) []*Problem { return nil }

// Promote is the flip; the old colour is no longer rendered, and its pods
// keep answering through their preStop pause while the route moves.
func (blueGreen) Promote(_ inventory.App, rel Release) Release { return finish(rel) }
func (blueGreen) Weights(inventory.App, Release) Weights       { return fullWeights }

func (blueGreen) Render(app inventory.App, rel Release, opts Options) []*unstructured.Unstructured {
	b := newBuilder(app, opts)
	objs := b.sideBySide(rel)
	if b.host() != "" {
		objs = append(objs, b.ingressRoute(app.Name, "", b.mainRoute(svc(b.slotName(colourOr(rel.Colour))))))
	}
	return objs
}
