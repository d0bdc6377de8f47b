package inventory

import (
	"slices"
	"strings"
)

// Defaults that are part of the contract (SPEC.md).
const (
	DefaultLocalStorageClass = "local-storage"
	DefaultArgoCDPath        = "."
	DefaultArgoCDRevision    = "HEAD"
	maxDefaultReplicas       = 3
)

// applyDefaults fills what the user may leave out. It never invents a value that
// validation would then refuse; validation sees the defaulted inventory.
func applyDefaults(inv *Inventory) {
	for i := range inv.Nodes {
		inv.Nodes[i].SSH = mergeSSH(inv.SSH, inv.Nodes[i].SSH)
	}
	if inv.Cluster.APIEndpoint == "" {
		if s := inv.Servers(); len(s) > 0 {
			inv.Cluster.APIEndpoint = s[0].Address
		}
	}
	if m := inv.Addons.MetalLB; m != nil {
		for i := range m.Pools {
			if m.Pools[i].Mode == "" {
				m.Pools[i].Mode = ModeL2
			}
		}
		// MetalLB and k3s' own ServiceLB would both answer for LoadBalancer Services.
		if len(m.Pools) > 0 && !slices.Contains(inv.Cluster.K3s.Disable, "servicelb") {
			inv.Cluster.K3s.Disable = append(inv.Cluster.K3s.Disable, "servicelb")
		}
	}
	if l := inv.Addons.Longhorn; l != nil {
		if l.Replicas == 0 {
			l.Replicas = min(maxDefaultReplicas, longhornNodes(inv))
		}
		// k3s' local-path class marks itself default too; two defaults make
		// every claim without a class ambiguous.
		if l.IsDefaultClass() && !slices.Contains(inv.Cluster.K3s.Disable, "local-storage") {
			inv.Cluster.K3s.Disable = append(inv.Cluster.K3s.Disable, "local-storage")
		}
	}
	// rack's pinned Traefik and k3s' bundled one would both claim ports 80
	// and 443 and the same IngressClass.
	if inv.Addons.Traefik != nil && !slices.Contains(inv.Cluster.K3s.Disable, "traefik") {
		inv.Cluster.K3s.Disable = append(inv.Cluster.K3s.Disable, "traefik")
	}
	if l := inv.Addons.LocalPV; l != nil && l.StorageClass == "" {
		l.StorageClass = DefaultLocalStorageClass
	}
	if a := inv.Addons.ArgoCD; a != nil {
		if a.Path == "" {
			a.Path = DefaultArgoCDPath
		}
		if a.Revision == "" {
			a.Revision = DefaultArgoCDRevision
		}
	}
	for i := range inv.Apps {
		app := &inv.Apps[i]
		if app.Replicas == 0 {
			app.Replicas = 1
		}
		if app.Strategy.Type == "" {
			app.Strategy.Type = StrategyRolling
		}
		app.Strategy.Type = strings.ToLower(app.Strategy.Type)
	}
}

// mergeSSH lays a node's overrides over the top-level defaults, field by field.
func mergeSSH(def, node SSH) SSH {
	out := def
	if node.User != "" {
		out.User = node.User
	}
	if node.Port != 0 {
		out.Port = node.Port
	}
	if node.IdentityFile != "" {
		out.IdentityFile = node.IdentityFile
	}
	if node.KnownHosts != "" {
		out.KnownHosts = node.KnownHosts
	}
	if node.HostKeyPolicy != "" {
		out.HostKeyPolicy = node.HostKeyPolicy
	}
	if node.Sudo != nil {
		out.Sudo = node.Sudo
	}
	if node.Bastion != "" {
		out.Bastion = node.Bastion
	}
	return out
}

func longhornNodes(inv *Inventory) int {
	n := 0
	for _, node := range inv.Nodes {
		if node.OffersLonghorn() {
			n++
		}
	}
	return n
}
