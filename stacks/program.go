// Package stacks is the Pulumi program that layers the platform (MetalLB,
// Longhorn, local PersistentVolumes, Argo CD) on a rack's k3s cluster, from
// the same inventory the nodes were bootstrapped from, and the Automation
// API runner `rack up` drives it with.
package stacks

import (
	"slices"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/argocd"
	"github.com/homelab/rack/addons/localpv"
	"github.com/homelab/rack/addons/longhorn"
	"github.com/homelab/rack/addons/metallb"
	"github.com/homelab/rack/inventory"
)

// Stack output names.
const (
	OutputMetalLBRanges  = "metallbRanges"
	OutputStorageClasses = "storageClasses"
	OutputArgoCDAddress  = "argocdAddress"
)

// Program returns the Pulumi program of the rack's platform. Addons the
// inventory leaves out are not created. Resources use the ambient kubernetes
// provider (the stack's kubernetes:kubeconfig, else $KUBECONFIG).
func Program(inv *inventory.Inventory) pulumi.RunFunc {
	return func(ctx *pulumi.Context) error {
		_, err := deploy(ctx, inv)
		return err
	}
}

// platform is what deploy created; nil fields are addons left out.
type platform struct {
	MetalLB  *metallb.MetalLB
	Longhorn *longhorn.Longhorn
	LocalPV  *localpv.LocalPV
	ArgoCD   *argocd.ArgoCD
	// Outputs are the stack outputs, exported under their keys.
	Outputs pulumi.Map
}

// deploy composes the components; opts go to each (e.g. the provider).
func deploy(ctx *pulumi.Context, inv *inventory.Inventory, opts ...pulumi.ResourceOption) (*platform, error) {
	var (
		p       platform
		err     error
		classes pulumi.StringArray
		ranges  = pulumi.StringArrayMap{}
		address = pulumi.String("").ToStringOutput()
	)
	a := inv.Addons
	if a.MetalLB != nil {
		if p.MetalLB, err = metallb.NewMetalLB(ctx, "metallb", metalLBArgs(inv), opts...); err != nil {
			return nil, err
		}
		for _, pool := range a.MetalLB.Pools {
			ranges[pool.Name] = pulumi.ToStringArray(pool.Addresses)
		}
	}
	if a.Longhorn != nil {
		if p.Longhorn, err = longhorn.NewLonghorn(ctx, "longhorn", longhornArgs(inv), opts...); err != nil {
			return nil, err
		}
		classes = append(classes, p.Longhorn.StorageClass)
	}
	if a.LocalPV != nil {
		if p.LocalPV, err = localpv.NewLocalPV(ctx, "localpv", localPVArgs(inv), opts...); err != nil {
			return nil, err
		}
		classes = append(classes, p.LocalPV.StorageClass)
	}
	if a.ArgoCD != nil {
		args := argoCDArgs(inv)
		aopts := opts
		if p.MetalLB != nil {
			args.LoadBalancerIP = argoCDAddress(a.MetalLB.Pools)
			// Its LoadBalancer Service is ready once MetalLB gave it the address.
			aopts = append(slices.Clip(aopts), pulumi.DependsOn(p.MetalLB.Serving))
		}
		if p.ArgoCD, err = argocd.NewArgoCD(ctx, "argocd", args, aopts...); err != nil {
			return nil, err
		}
		address = p.ArgoCD.Address
	}
	if err := traefikAddon(ctx, inv, &p, opts...); err != nil {
		return nil, err
	}

	p.Outputs = pulumi.Map{
		OutputMetalLBRanges:  ranges,
		OutputStorageClasses: classes.ToStringArrayOutput(),
		OutputArgoCDAddress:  address,
	}
	for k, v := range p.Outputs {
		ctx.Export(k, v)
	}
	return &p, nil
}

func metalLBArgs(inv *inventory.Inventory) *metallb.MetalLBArgs {
	m := inv.Addons.MetalLB
	args := &metallb.MetalLBArgs{Chart: ChartSource(inv, "addons.metallb")}
	for _, p := range m.Pools {
		pool := metallb.Pool{Name: p.Name, Addresses: p.Addresses, Mode: p.Mode, MyASN: p.MyASN}
		for _, peer := range p.Peers {
			pool.Peers = append(pool.Peers, metallb.Peer{Address: peer.Address, ASN: peer.ASN})
		}
		args.Pools = append(args.Pools, pool)
	}
	return args
}

func longhornArgs(inv *inventory.Inventory) *longhorn.LonghornArgs {
	l := inv.Addons.Longhorn
	args := &longhorn.LonghornArgs{Chart: ChartSource(inv, "addons.longhorn"), Replicas: l.Replicas, DefaultClass: l.IsDefaultClass()}
	for _, n := range inv.Nodes {
		if n.OffersLonghorn() {
			args.Nodes = append(args.Nodes, longhorn.Node{Name: n.Name, Path: n.Storage.Longhorn})
		}
	}
	return args
}

func localPVArgs(inv *inventory.Inventory) *localpv.LocalPVArgs {
	args := &localpv.LocalPVArgs{StorageClass: inv.Addons.LocalPV.StorageClass}
	for _, v := range inv.LocalVolumes() {
		args.Volumes = append(args.Volumes, localpv.Volume{Name: v.Name, Node: v.Node, Path: v.Path, Capacity: v.Capacity})
	}
	return args
}

func argoCDArgs(inv *inventory.Inventory) *argocd.ArgoCDArgs {
	a := inv.Addons.ArgoCD
	return &argocd.ArgoCDArgs{Chart: ChartSource(inv, "addons.argocd"), Repo: a.Repo, Path: a.Path, Revision: a.Revision}
}

// argoCDAddress picks the Argo CD server's LoadBalancer address: the last
// address of the first pool. MetalLB hands out addresses from the low end,
// so the top one stays free for a fixed, predictable UI address.
func argoCDAddress(pools []inventory.IPPool) string {
	if len(pools) == 0 || len(pools[0].Addresses) == 0 {
		return ""
	}
	addrs := pools[0].Addresses
	r, err := inventory.ParseRange(addrs[len(addrs)-1])
	first, last := r.First, r.Last
	if err != nil {
		return "" // validated inventories never get here; ClusterIP then
	}
	// x.x.x.255 and x.x.x.0 trip up some clients (MetalLB's avoidBuggyIPs).
	if last.Is4() && (last.As4()[3] == 255 || last.As4()[3] == 0) && last.Prev().Compare(first) >= 0 {
		last = last.Prev()
	}
	return last.String()
}
