package apps

import (
	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// shadow answers every client from the stable version and copies
// strategy.mirror percent of the requests to the candidate, whose answers
// Traefik discards (a mirroring TraefikService). Promote releases the
// candidate to everyone.
type shadow struct{}

func (shadow) Type() string     { return inventory.StrategyShadow }
func (shadow) SideBySide() bool { return true }

func (shadow) Check(app inventory.App) []*Problem {
	ps := needsHost(&builder{app: app}, inventory.StrategyShadow)
	if m := app.Strategy.Mirror; m < 1 || m > 100 {
		ps = append(ps, problem(app, "strategy.mirror", "shadow needs mirror: the percent of requests (1-100) copied to the candidate, like mirror: 10"))
	}
	return ps
}

func (shadow) Promote(_ inventory.App, rel Release) Release { return finish(rel) }

// Weights: clients only ever see the stable version.
func (shadow) Weights(inventory.App, Release) Weights { return fullWeights }

func (shadow) Render(app inventory.App, rel Release, opts Options) []*unstructured.Unstructured {
	b := newBuilder(app, opts)
	stable := colourOr(rel.Colour)
	var mirror *backend
	if rel.Candidate != "" {
		m := svc(b.slotName(stable.Other()))
		mirror = &m
	}
	return append(b.sideBySide(rel),
		b.mirroring(app.Name, svc(b.slotName(stable)), mirror, app.Strategy.Mirror),
		b.ingressRoute(app.Name, "", b.mainRoute(traefikSvc(app.Name))),
	)
}
