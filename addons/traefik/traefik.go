// Package traefik is the Traefik addon: rack's own pinned Traefik (chart
// 39.0.9, Traefik v3.6.15), the front door of every app with expose.host.
// Its IngressRoute CRD provider routes the apps' release strategies
// (weighted and mirroring TraefikServices, header and cookie matchers); its
// LoadBalancer Service gets an address from MetalLB. k3s' bundled Traefik
// is disabled when this one is on, so the version is rack's to pin.
package traefik

import (
	"cmp"
	"fmt"
	"net/netip"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/charts"
	"github.com/homelab/rack/addons/internal/chart"
)

// The pinned chart and the Traefik it ships.
const (
	ChartVersion   = "39.0.9"
	TraefikVersion = "v3.6.15"
)

// Where Traefik runs. apps/release reads the Service's address for the
// health gates' check path (it keeps its own copy of these names: it does
// not import Pulumi).
const (
	DefaultNamespace = "traefik"
	// ServiceName is Traefik's LoadBalancer Service (fullnameOverride).
	ServiceName = "traefik"
	// WebPort names the Service port of the plain-HTTP entry point (80).
	WebPort = "web"
	// Replicas of Traefik: two, so a node drain or a Traefik upgrade never
	// leaves the apps without a front door.
	Replicas = 2
)

// TraefikArgs configure the addon.
type TraefikArgs struct {
	// Chart is where the chart comes from: "" for the pinned upstream
	// repository, an absolute path to the packaged chart (the chart
	// mirror's traefik-39.0.9.tgz, or the addon's own override), or an
	// oci:// mirror.
	Chart string
	// Namespace defaults to traefik.
	Namespace string
	// LoadBalancerIP asks MetalLB for this address; empty lets it pick.
	LoadBalancerIP string
}

// Traefik is the installed addon.
type Traefik struct {
	pulumi.ResourceState

	Namespace pulumi.StringOutput
	Release   *chart.HelmRelease
	// Address is http://<LoadBalancerIP> once Traefik serves, "" when
	// MetalLB picks the address.
	Address pulumi.StringOutput
}

// NewTraefik installs Traefik.
func NewTraefik(ctx *pulumi.Context, name string, args *TraefikArgs, opts ...pulumi.ResourceOption) (*Traefik, error) {
	t := &Traefik{}
	parent, err := chart.Register(ctx, "rack:addons:Traefik", name, args, (*TraefikArgs).validate, t, opts...)
	if err != nil {
		return nil, err
	}
	t.Namespace, t.Release, err = chart.Release{
		Name:  "traefik",
		Chart: charts.Traefik, Source: args.Chart,
		// Traefik listens on unprivileged ports as a non-root user: the
		// namespace keeps the cluster's default pod security.
		Namespace: cmp.Or(args.Namespace, DefaultNamespace),
		Values:    ChartValues(args.LoadBalancerIP),
		// Ready means Traefik's pods serve and MetalLB gave the Service
		// its address.
		Timeout: 600,
	}.Install(ctx, name, parent)
	if err != nil {
		return nil, err
	}
	addr := ""
	if args.LoadBalancerIP != "" {
		addr = "http://" + args.LoadBalancerIP
	}
	// Derived from the release: the address answers once Traefik is up.
	t.Address = t.Release.Status.ApplyT(func(map[string]any) string { return addr }).(pulumi.StringOutput)

	if err := ctx.RegisterResourceOutputs(t, pulumi.Map{
		"namespace": t.Namespace,
		"address":   t.Address,
	}); err != nil {
		return nil, err
	}
	return t, nil
}

// ProvidersThrottle is Traefik's providersThrottleDuration (default 2s).
const ProvidersThrottle = "200ms"

// ChartValues are rack's settings over the chart's defaults.
func ChartValues(lbIP string) pulumi.Map {
	service := pulumi.Map{"type": pulumi.String("LoadBalancer")}
	if lbIP != "" {
		// MetalLB's way of asking for one address (spec.loadBalancerIP is
		// deprecated).
		service["annotations"] = pulumi.Map{"metallb.io/loadBalancerIPs": pulumi.String(lbIP)}
	}
	return pulumi.Map{
		// Stable object names (the traefik Service the gates read) whatever
		// the release is called.
		"fullnameOverride": pulumi.String(ServiceName),
		"deployment":       pulumi.Map{"replicas": pulumi.Int(Replicas)},
		// One pod at a time through a drain or an upgrade.
		"podDisruptionBudget": pulumi.Map{"enabled": pulumi.Bool(true), "maxUnavailable": pulumi.Int(1)},
		"providers": pulumi.Map{
			"kubernetesCRD": pulumi.Map{
				// IngressRoute, TraefikService (weighted, mirroring):
				// every release strategy of apps/.
				"enabled": pulumi.Bool(true),
				// A Service without ready endpoints answers 503 for its own
				// share instead of taking the whole route (a
				// TraefikService naming it) down with it.
				"allowEmptyServices":  pulumi.Bool(true),
				"allowCrossNamespace": pulumi.Bool(false),
			},
		},
		// No dashboard: not served, not routed.
		"api":          pulumi.Map{"dashboard": pulumi.Bool(false)},
		"ingressRoute": pulumi.Map{"dashboard": pulumi.Map{"enabled": pulumi.Bool(false)}},
		"service":      service,
		// A homelab's front door does not phone home.
		"global": pulumi.Map{"checkNewVersion": pulumi.Bool(false), "sendAnonymousUsage": pulumi.Bool(false)},
		// Traefik holds a configuration change back until 2 s after the
		// last one it applied; a release step changes several routing
		// objects in a row, so a blue-green flip or canary step would wait
		// out most of that. A homelab's few routes reload in milliseconds.
		"additionalArguments": pulumi.StringArray{pulumi.String("--providers.providersThrottleDuration=" + ProvidersThrottle)},
	}
}

func (a *TraefikArgs) validate() error {
	if a.LoadBalancerIP != "" {
		if _, err := netip.ParseAddr(a.LoadBalancerIP); err != nil {
			return fmt.Errorf("traefik: loadBalancerIP %q is not an IP address", a.LoadBalancerIP)
		}
	}
	return nil
}
