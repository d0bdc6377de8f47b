// Package metallb is the MetalLB addon: the chart, and one IPAddressPool with
// its L2 or BGP advertisement per address pool, so LoadBalancer Services get
// addresses from the user's LAN.
package metallb

import (
	"cmp"
	"errors"
	"fmt"

	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes"
	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/apiextensions"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/internal/chart"
)

// The pinned MetalLB chart. Its CRDs are those of the Go module
// go.universe.tf/metallb at the same version (CRDModule), which the tests
// install to validate the pools server-side.
const (
	ChartRepo    = "https://metallb.github.io/metallb"
	ChartVersion = "0.16.2"
	// CRDModule is the Go module holding the chart's CRDs (config/crd/bases).
	CRDModule = "go.universe.tf/metallb@v" + ChartVersion
)

// DefaultNamespace is where MetalLB runs.
const DefaultNamespace = "metallb-system"

// API versions of the MetalLB custom resources.
const (
	apiV1beta1 = "metallb.io/v1beta1"
	apiV1beta2 = "metallb.io/v1beta2" // BGPPeer's storage version
)

// Pool modes.
const (
	ModeL2  = "l2"
	ModeBGP = "bgp"
)

// MetalLBArgs configure the addon.
type MetalLBArgs struct {
	// Chart overrides the chart source: an absolute local chart folder or an
	// oci:// mirror. Empty means the pinned upstream chart.
	Chart string
	// Namespace defaults to metallb-system.
	Namespace string
	// Pools become one IPAddressPool each.
	Pools []Pool
}

// Pool is one address pool and how it is announced.
type Pool struct {
	Name string
	// Addresses are a.b.c.d-e.f.g.h ranges or CIDRs.
	Addresses []string
	// Mode is l2 (default) or bgp.
	Mode string
	// MyASN and Peers apply to bgp mode.
	MyASN uint32
	Peers []Peer
}

// Peer is a BGP router.
type Peer struct {
	Address string
	ASN     uint32
}

// MetalLB is the installed addon.
type MetalLB struct {
	pulumi.ResourceState

	Namespace pulumi.StringOutput
	Release   *chart.HelmRelease
	// Serving is the release and every pool, advertisement and peer: what a
	// LoadBalancer Service needs before it gets an address. Depend on these,
	// not on the component: a component expands only to the children
	// registered so far, which races with the pools being created.
	Serving []pulumi.Resource
	// Ranges maps each pool's name to its addresses.
	Ranges pulumi.StringArrayMapOutput
}

// NewMetalLB installs MetalLB and its address pools.
func NewMetalLB(ctx *pulumi.Context, name string, args *MetalLBArgs, opts ...pulumi.ResourceOption) (*MetalLB, error) {
	m := &MetalLB{}
	parent, err := chart.Register(ctx, "rack:addons:MetalLB", name, args, (*MetalLBArgs).validate, m, opts...)
	if err != nil {
		return nil, err
	}
	m.Namespace, m.Release, err = chart.Release{
		Name:  "metallb",
		Chart: chart.Pinned{Name: "metallb", Repo: ChartRepo, Version: ChartVersion}, Source: args.Chart,
		// The speaker needs the host network and NET_RAW: the namespace must
		// admit privileged pods whatever the cluster's default policy is.
		Namespace: cmp.Or(args.Namespace, DefaultNamespace), Privileged: true,
		Values: chartValues(args.Pools),
		// The pools below go through MetalLB's validating webhook: the
		// release must be ready, not merely applied.
		Timeout: 600,
	}.Install(ctx, name, parent)
	if err != nil {
		return nil, err
	}
	m.Serving = append(m.Serving, m.Release)
	// The CRDs and the webhook come with the chart.
	afterChart := pulumi.DependsOn([]pulumi.Resource{m.Release})

	ranges := map[string][]string{}
	for _, p := range args.Pools {
		ranges[p.Name] = p.Addresses
		if err := m.pool(ctx, name, p, parent, afterChart); err != nil {
			return nil, err
		}
	}
	// Derived from the release: the addresses are served once MetalLB runs.
	m.Ranges = m.Release.Status.ApplyT(func(map[string]any) map[string][]string { return ranges }).(pulumi.StringArrayMapOutput)

	if err := ctx.RegisterResourceOutputs(m, pulumi.Map{
		"namespace": m.Namespace,
		"ranges":    m.Ranges,
	}); err != nil {
		return nil, err
	}
	return m, nil
}

// chartValues are rack's settings over the chart's defaults.
func chartValues(pools []Pool) pulumi.Map {
	return pulumi.Map{
		"crds": pulumi.Map{"enabled": pulumi.Bool(true)},
		// Speakers run on the control plane too: on a small rack every node
		// may have to answer ARP for a Service.
		"speaker": pulumi.Map{"tolerateMaster": pulumi.Bool(true)},
		// 0.16 turns frr-k8s on by default: a DaemonSet and a webhook on
		// every Pi that only BGP needs.
		"frrk8s": pulumi.Map{"enabled": pulumi.Bool(UsesBGP(pools))},
	}
}

// UsesBGP reports whether any pool is announced over BGP.
func UsesBGP(pools []Pool) bool {
	for _, p := range pools {
		if p.Mode == ModeBGP {
			return true
		}
	}
	return false
}

// asn is an AS number as a Pulumi number: a float64 holds every uint32
// exactly, where int would overflow above 2^31 on 32-bit hosts (a Pi on a
// 32-bit OS).
func asn(n uint32) pulumi.Float64 { return pulumi.Float64(float64(n)) }

// pool registers one IPAddressPool and how it is announced.
func (m *MetalLB) pool(ctx *pulumi.Context, name string, p Pool, opts ...pulumi.ResourceOption) error {
	res := fmt.Sprintf("%s-%s", name, p.Name)
	pool, err := m.custom(ctx, res, apiV1beta1, "IPAddressPool", p.Name, pulumi.Map{
		"addresses": pulumi.ToStringArray(p.Addresses),
	}, opts...)
	if err != nil {
		return err
	}
	opts = append(opts, pulumi.DependsOn([]pulumi.Resource{pool}))
	pools := pulumi.StringArray{pulumi.String(p.Name)}

	if p.Mode == ModeBGP {
		peerNames := pulumi.StringArray{}
		for i, peer := range p.Peers {
			peerName := fmt.Sprintf("%s-peer-%d", p.Name, i)
			peerNames = append(peerNames, pulumi.String(peerName))
			if _, err := m.custom(ctx, fmt.Sprintf("%s-peer-%d", res, i), apiV1beta2, "BGPPeer", peerName, pulumi.Map{
				"myASN":       asn(p.MyASN),
				"peerASN":     asn(peer.ASN),
				"peerAddress": pulumi.String(peer.Address),
			}, opts...); err != nil {
				return err
			}
		}
		// Announce this pool to its own routers only, not to every peer.
		_, err = m.custom(ctx, res, apiV1beta1, "BGPAdvertisement", p.Name, pulumi.Map{
			"ipAddressPools": pools,
			"peers":          peerNames,
		}, opts...)
		return err
	}
	_, err = m.custom(ctx, res, apiV1beta1, "L2Advertisement", p.Name, pulumi.Map{
		"ipAddressPools": pools,
	}, opts...)
	return err
}

func (m *MetalLB) custom(ctx *pulumi.Context, res, apiVersion, kind, name string, spec pulumi.Map, opts ...pulumi.ResourceOption) (*apiextensions.CustomResource, error) {
	r, err := apiextensions.NewCustomResource(ctx, res, &apiextensions.CustomResourceArgs{
		ApiVersion: pulumi.String(apiVersion),
		Kind:       pulumi.String(kind),
		Metadata: &metav1.ObjectMetaArgs{
			Name:      pulumi.String(name),
			Namespace: m.Namespace,
		},
		OtherFields: kubernetes.UntypedArgs{"spec": spec},
	}, opts...)
	if err == nil {
		m.Serving = append(m.Serving, r)
	}
	return r, err
}

func (a *MetalLBArgs) validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, p := range a.Pools {
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("pools[%d]: a name is required", i))
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("pools[%d]: duplicate pool name %q", i, p.Name))
		}
		seen[p.Name] = true
		if len(p.Addresses) == 0 {
			errs = append(errs, fmt.Errorf("pool %q: no addresses", p.Name))
		}
		switch p.Mode {
		case ModeL2, "":
		case ModeBGP:
			if p.MyASN == 0 || len(p.Peers) == 0 {
				errs = append(errs, fmt.Errorf("pool %q: bgp mode needs myASN and at least one peer", p.Name))
			}
		default:
			errs = append(errs, fmt.Errorf("pool %q: unknown mode %q (l2 or bgp)", p.Name, p.Mode))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("metallb: %w", err)
	}
	return nil
}
