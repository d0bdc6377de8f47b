// Package apps renders the inventory's apps into Kubernetes objects, purely:
// (app, release state) → objects, with no Pulumi and no API calls, so the
// Pulumi apps stack and `rack render` (GitOps through Argo CD) deliver the
// same objects from the same functions.
//
// Deploy is not release. Changing an app's image and running `rack up` is
// Deploy: recreate and rolling replace the version at once; the other
// strategies start the new image as a candidate beside the stable one, and
// Promote and Rollback move traffic. Release is the state kept with the
// stack; Render turns (app, Release) into objects; Status is what
// `rack app status -o json` prints.
//
// # Slots, so no selector ever changes
//
// Selectors of Deployments are immutable, so the strategies that run two
// versions side by side (blue-green, canary, ab, shadow) never rename a
// version's Deployment: each version lives in a colour slot, <app>-blue or
// <app>-green, whose pods carry the colour label for their whole life.
// Release.Colour says which slot is stable; the candidate runs in the other.
// Promoting to the full release makes the candidate's slot the stable one and
// deletes the old slot: no pod restarts, no image change on a Deployment
// that serves traffic, no selector change on any Deployment. What moves is
// mutable: the selector of the role Services (<app> always reaches the
// stable version, <app>-preview the candidate) and the Traefik objects.
//
// Traefik routes to per-slot Services (<app>-blue, <app>-green) whose
// endpoints never change colour, so a flip or a weight change is one atomic
// Traefik configuration change rather than an EndpointSlice race.
//
// # Order of application
//
// Traefik refuses a whole TraefikService when one of its Services has no
// ready endpoint, so traffic objects must only reach a Service once its pods
// are ready, and a Service must outlive the traffic objects that name it.
// The objects carry that order for both deliverers: Argo CD sync waves
// (Wave: workloads 0, TraefikServices 1, IngressRoutes 2, the next waiting
// for the previous to be healthy) and PruneLast on Deployments and Services.
// The Pulumi deliverer makes each object depend on DependsOn: a Traefik
// object on exactly what it sends requests to, so a route moves as soon as
// its target is ready and never waits for unrelated changes of the same
// step; Pulumi deletes removed objects after its creates and updates. A
// promote changes nothing a route depends on (a slot's objects carry no
// track label), so the route's move is the step's first change.
//
// # Route markers
//
// Traefik loads a route a moment after the API server has it. Every
// IngressRoute ends with a marker route (RouteMarker) whose path carries a
// digest of what the route reaches and which Traefik's noop service
// answers: once the new marker answers, Traefik serves the new version of
// the route, and a deliverer can return then rather than while clients
// still get 404 from a new route or the old version from a moved one.
//
// # Secrets
//
// Env values the inventory takes from ${VAR} (Options.SecretEnv) never
// appear in a rendered object: Deployments read them from the Secret
// <app>-env (wave WaveConfig, before the workloads), which Render emits with
// SecretPlaceholder values. The Pulumi deliverer fills it with the values as
// Pulumi secrets; rack render writes it as a .yaml.example placeholder that
// Argo CD does not apply, saying how to seal the values.
//
// # GitOps
//
// RenderRepo lays the same objects out for Argo CD: <path>/<app>/ per app
// and one child Application per app, <path>/<app>.yaml, beside which the
// root app-of-apps Application (addons/argocd) finds them. WriteRepo writes
// them and removes only what rack render wrote before and no longer writes.
//
// Health gates, promote and rollback against a cluster live in
// apps/release, which reads the API with client-go; this package renders.
package apps
