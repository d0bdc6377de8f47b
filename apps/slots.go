package apps

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// inPlace renders the strategies that replace the version at once: one
// Deployment and one Service named after the app, and the app's route.
func (b *builder) inPlace(rel Release, strategy appsv1.DeploymentStrategy) []*unstructured.Unstructured {
	objs := []*unstructured.Unstructured{
		b.deployment(b.app.Name, "", rel.Stable, TrackStable, strategy),
		b.service(b.app.Name, "", TrackStable, b.serviceType()),
	}
	if b.host() != "" {
		objs = append(objs, b.ingressRoute(b.app.Name, "", b.mainRoute(svc(b.app.Name))))
	}
	return objs
}

// slotTrack is the track of a slot's Deployment and Service: none. The
// slot's role (stable or candidate) is the release state's, and the role
// Services (<app>, <app>-preview) carry it; a slot's objects stay exactly
// as they are when a promote flips which slot is stable, so nothing that
// routes to them waits for them to be updated.
const slotTrack = ""

// sideBySide renders what every side-by-side strategy shares: a Deployment
// per live slot; the role Services, <app> for the stable version (the
// address in-cluster clients and MetalLB use) and <app>-preview for the
// candidate; and, when Traefik routes the app, one Service per slot for
// Traefik's objects and the preview IngressRoute. The strategy adds how
// clients' requests reach the slots.
func (b *builder) sideBySide(rel Release) []*unstructured.Unstructured {
	stable := colourOr(rel.Colour)
	// A slot's own objects carry no track: which slot is stable changes on
	// promote, and a label change would make them change with it, an
	// update the route's move would wait for (see slotTrack).
	objs := []*unstructured.Unstructured{
		b.deployment(b.slotName(stable), stable, rel.Stable, slotTrack, rollingUpdate()),
		b.service(b.app.Name, stable, TrackStable, b.serviceType()),
	}
	if b.host() != "" {
		objs = append(objs, b.service(b.slotName(stable), stable, slotTrack, corev1.ServiceTypeClusterIP))
	}
	if rel.Candidate == "" {
		return objs
	}
	cand := stable.Other()
	objs = append(objs,
		// Rolling too: a newer candidate replacing an older one must not
		// take the preview down.
		b.deployment(b.slotName(cand), cand, rel.Candidate, slotTrack, rollingUpdate()),
		b.service(b.previewName(), cand, TrackCandidate, b.serviceType()),
	)
	if b.host() != "" {
		objs = append(objs,
			b.service(b.slotName(cand), cand, slotTrack, corev1.ServiceTypeClusterIP),
			b.ingressRoute(b.previewName(), TrackCandidate, b.previewRoute(cand)),
		)
	}
	return objs
}

// needsHost is the problem of a strategy that splits traffic in Traefik
// for an app Traefik does not route.
func needsHost(b *builder, typ string) []*Problem {
	if b.host() != "" {
		return nil
	}
	return []*Problem{problem(b.app, "expose.host", "strategy %s splits requests in Traefik, so the app needs a route: set expose: {host: %s.home.arpa} (and addons.traefik), or use rolling or blue-green", typ, b.app.Name)}
}
