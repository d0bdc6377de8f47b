package apps

import (
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Traefik v3 CRDs, written as plain objects: rack imports no Traefik code.
const TraefikAPIVersion = "traefik.io/v1alpha1"

// The preview route: requests to the app's host carrying this header reach
// the candidate, whatever the strategy, so health gates and people can try
// it through the app's own route before it is released (curl -H
// 'X-Rack-Preview: true' http://web.home.arpa/healthz). A header rather
// than a preview host needs no extra DNS name in the home network.
const (
	PreviewHeader = "X-Rack-Preview"
	PreviewValue  = "true"
)

// Route priorities. The main route keeps Traefik's default (the rule's
// length); the candidate's routes are longer rules anyway, and explicit high
// priorities make the choice obvious and independent of names.
const (
	PriorityMatch   = 1000 // A/B: requests matching strategy.match
	PriorityPreview = 1001 // the preview header
	PriorityMarker  = 1002 // a route's marker (see RouteMarker)
)

// MirrorMaxBodySize caps the request bodies shadow copies to the candidate:
// Traefik buffers a mirrored body in memory, and a small machine should not
// hold a large upload twice. Larger requests still reach the stable version,
// only without a copy.
const MirrorMaxBodySize = 1 << 20

// Waves of application (see the package comment).
const (
	WaveWorkload       = 0
	WaveTraefikService = 1
	WaveIngressRoute   = 2
)

// backend is what a route or a TraefikService sends requests to.
type backend struct {
	kind string // Service or TraefikService
	name string
}

func svc(name string) backend        { return backend{kind: "Service", name: name} }
func traefikSvc(name string) backend { return backend{kind: "TraefikService", name: name} }
func (b *builder) port() int64       { return int64(b.app.Port) }
func (b *builder) ref(be backend) map[string]any {
	m := map[string]any{"kind": be.kind, "name": be.name}
	if be.kind == "Service" {
		m["port"] = b.port()
	}
	return m
}

// route is one rule of an IngressRoute.
type route struct {
	match    string
	priority int64 // 0: Traefik's default
	to       backend
}

// hostRule matches the app's host.
func hostRule(host string) string { return fmt.Sprintf("Host(`%s`)", host) }

// headerRule matches requests with header name set to value exactly.
func headerRule(name, value string) string { return fmt.Sprintf("Header(`%s`, `%s`)", name, value) }

// cookieRule matches requests carrying cookie name=value. Traefik v3 has no
// cookie matcher; the Cookie header is "a=1; name=value; b=2", so the
// regexp anchors the pair between separators (HTTP/2 may send several
// Cookie headers; each is matched on its own).
func cookieRule(name, value string) string {
	return fmt.Sprintf("HeaderRegexp(`Cookie`, `(?:^|;\\s*)%s=%s(?:;|$)`)", regexp.QuoteMeta(name), regexp.QuoteMeta(value))
}

// mainRoute sends the host's requests to to.
func (b *builder) mainRoute(to backend) route { return route{match: hostRule(b.host()), to: to} }

// previewRoute pins requests with the preview header to the candidate's slot.
func (b *builder) previewRoute(candidate Colour) route {
	return route{
		match:    hostRule(b.host()) + " && " + headerRule(PreviewHeader, PreviewValue),
		priority: PriorityPreview,
		to:       svc(b.slotName(candidate)),
	}
}

func (b *builder) traefikMeta(name, track string, wave int) map[string]any {
	labels := map[string]any{}
	for k, v := range b.selector("") {
		labels[k] = v
	}
	if track != "" {
		labels[LabelTrack] = track
	}
	return map[string]any{
		"name": name, "namespace": b.ns, "labels": labels,
		"annotations": map[string]any{AnnotationSyncWave: fmt.Sprint(wave)},
	}
}

// ingressRoute is a Traefik IngressRoute on every entry point.
func (b *builder) ingressRoute(name, track string, routes ...route) *unstructured.Unstructured {
	var rs []any
	for _, r := range routes {
		m := map[string]any{"kind": "Rule", "match": r.match, "services": []any{b.ref(r.to)}}
		if r.priority != 0 {
			m["priority"] = r.priority
		}
		rs = append(rs, m)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": TraefikAPIVersion, "kind": "IngressRoute",
		"metadata": b.traefikMeta(name, track, WaveIngressRoute),
		"spec":     map[string]any{"routes": rs},
	}}
}

// weight is one service of a weighted TraefikService.
type weight struct {
	to      backend
	percent int
}

// weighted is a weighted round-robin TraefikService. Zero weights are left
// out: Traefik ignores them, yet would still refuse the whole TraefikService
// if that Service had no ready endpoint.
func (b *builder) weighted(name string, ws ...weight) *unstructured.Unstructured {
	var services []any
	for _, w := range ws {
		if w.percent <= 0 {
			continue
		}
		m := b.ref(w.to)
		m["weight"] = int64(w.percent)
		services = append(services, m)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": TraefikAPIVersion, "kind": "TraefikService",
		"metadata": b.traefikMeta(name, "", WaveTraefikService),
		"spec":     map[string]any{"weighted": map[string]any{"services": services}},
	}}
}

// mirroring is a TraefikService answering from main and copying percent of
// the requests to mirror (none when mirror is unset), whose answers Traefik
// discards.
func (b *builder) mirroring(name string, main backend, mirror *backend, percent int) *unstructured.Unstructured {
	spec := b.ref(main)
	spec["maxBodySize"] = int64(MirrorMaxBodySize)
	if mirror != nil {
		m := b.ref(*mirror)
		m["percent"] = int64(percent)
		spec["mirrors"] = []any{m}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": TraefikAPIVersion, "kind": "TraefikService",
		"metadata": b.traefikMeta(name, "", WaveTraefikService),
		"spec":     map[string]any{"mirroring": spec},
	}}
}
