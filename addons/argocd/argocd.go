// Package argocd is the Argo CD addon: Argo CD itself and a root Application
// (app of apps) that syncs the GitOps repository named in the inventory.
package argocd

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"

	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes"
	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/apiextensions"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/internal/chart"
)

// The pinned Argo CD chart: argo-helm's argo-cd 10.1.1 deploys Argo CD
// AppVersion, whose Application CRD is that of the Go module CRDModule.
const (
	ChartRepo    = "https://argoproj.github.io/argo-helm"
	ChartVersion = "10.1.1"
	AppVersion   = "v3.4.4"
	// CRDModule is the Go module holding AppVersion's CRDs (manifests/crds).
	CRDModule = "github.com/argoproj/argo-cd/v3@" + AppVersion
)

// Defaults.
const (
	DefaultNamespace = "argocd"
	DefaultRootApp   = "root"
	// Finalizer makes deleting an Application delete what it deployed. The
	// root Application never carries it: removing Argo CD from the
	// inventory must not take the apps' workloads with it.
	Finalizer = "resources-finalizer.argocd.argoproj.io"
	// inCluster is how Argo CD names the cluster it runs in.
	inCluster = "https://kubernetes.default.svc"
)

// ArgoCDArgs configure the addon.
type ArgoCDArgs struct {
	// Chart overrides the chart source: an absolute local chart folder or an
	// oci:// mirror. Empty means the pinned upstream chart.
	Chart string
	// Namespace defaults to argocd.
	Namespace string
	// Repo, Path and Revision locate the apps the root Application syncs.
	Repo     string
	Path     string
	Revision string
	// RootApp names the root Application (default root).
	RootApp string
	// LoadBalancerIP, when set, exposes the Argo CD server as a LoadBalancer
	// Service at this address (MetalLB); otherwise it stays ClusterIP.
	LoadBalancerIP string
}

// ArgoCD is the installed addon.
type ArgoCD struct {
	pulumi.ResourceState

	Namespace pulumi.StringOutput
	Release   *chart.HelmRelease
	RootApp   *apiextensions.CustomResource
	// Address is the URL of the Argo CD server (UI and API).
	Address pulumi.StringOutput
}

// NewArgoCD installs Argo CD and the root Application.
func NewArgoCD(ctx *pulumi.Context, name string, args *ArgoCDArgs, opts ...pulumi.ResourceOption) (*ArgoCD, error) {
	a := &ArgoCD{}
	parent, err := chart.Register(ctx, "rack:addons:ArgoCD", name, args, (*ArgoCDArgs).validate, a, opts...)
	if err != nil {
		return nil, err
	}
	nsName := cmp.Or(args.Namespace, DefaultNamespace)
	a.Namespace, a.Release, err = chart.Release{
		// A Release rather than a v4 Chart: the redis password Secret comes
		// from the chart's pre-install hook Job, which only Helm itself runs.
		Name:  "argocd",
		Chart: chart.Pinned{Name: "argo-cd", Repo: ChartRepo, Version: ChartVersion}, Source: args.Chart,
		// The namespace is kept when the addon is removed: deleting it would
		// delete the apps' own Applications, which a finalizer may then hold
		// forever once Argo CD itself is gone.
		Namespace: nsName, NamespaceOpts: []pulumi.ResourceOption{pulumi.RetainOnDelete(true)},
		Values:  chartValues(args.LoadBalancerIP),
		Timeout: 900,
	}.Install(ctx, name, parent)
	if err != nil {
		return nil, err
	}

	// The Application CRD comes with the chart.
	a.RootApp, err = apiextensions.NewCustomResource(ctx, name+"-"+cmp.Or(args.RootApp, DefaultRootApp), &apiextensions.CustomResourceArgs{
		ApiVersion: pulumi.String("argoproj.io/v1alpha1"),
		Kind:       pulumi.String("Application"),
		// No Finalizer: deleting the root app (removing the addon) leaves
		// the apps it synced running.
		Metadata: &metav1.ObjectMetaArgs{
			Name:      pulumi.String(cmp.Or(args.RootApp, DefaultRootApp)),
			Namespace: a.Namespace,
		},
		OtherFields: kubernetes.UntypedArgs{"spec": rootAppSpec(args, nsName)},
	}, parent, pulumi.DependsOn([]pulumi.Resource{a.Release}))
	if err != nil {
		return nil, err
	}

	addr := URL(fmt.Sprintf("argocd-server.%s.svc.cluster.local", nsName))
	if args.LoadBalancerIP != "" {
		addr = URL(args.LoadBalancerIP)
	}
	// Derived from the release: the address answers once Argo CD is up.
	a.Address = a.Release.Status.ApplyT(func(map[string]any) string { return addr }).(pulumi.StringOutput)

	if err := ctx.RegisterResourceOutputs(a, pulumi.Map{
		"namespace": a.Namespace,
		"address":   a.Address,
	}); err != nil {
		return nil, err
	}
	return a, nil
}

// URL is the https URL of the Argo CD server at host, a name or an IP
// address (IPv6 in brackets).
func URL(host string) string {
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.String()
		if ip.Is6() {
			host = "[" + host + "]"
		}
	}
	return "https://" + host
}

// chartValues are rack's settings over the chart's defaults.
func chartValues(lbIP string) pulumi.Map {
	service := pulumi.Map{"type": pulumi.String("ClusterIP")}
	if lbIP != "" {
		service = pulumi.Map{
			"type": pulumi.String("LoadBalancer"),
			// MetalLB's way of asking for one address (spec.loadBalancerIP
			// is deprecated).
			"annotations": pulumi.Map{"metallb.io/loadBalancerIPs": pulumi.String(lbIP)},
		}
	}
	return pulumi.Map{
		// Stable object names (argocd-server, …) whatever the release is called.
		"fullnameOverride": pulumi.String("argocd"),
		"server":           pulumi.Map{"service": service},
		// Removing the addon must not delete every Application with the CRD.
		"crds": pulumi.Map{"keep": pulumi.Bool(true)},
	}
}

// rootAppSpec is the app of apps: everything under Path in Repo, kept in
// sync (pruned, self-healed), namespaces created as the apps need them.
func rootAppSpec(a *ArgoCDArgs, namespace string) pulumi.Map {
	return pulumi.Map{
		"project": pulumi.String("default"),
		"source": pulumi.Map{
			"repoURL":        pulumi.String(a.Repo),
			"path":           pulumi.String(a.Path),
			"targetRevision": pulumi.String(a.Revision),
		},
		"destination": pulumi.Map{
			"server":    pulumi.String(inCluster),
			"namespace": pulumi.String(namespace),
		},
		"syncPolicy": pulumi.Map{
			"automated": pulumi.Map{
				"prune":    pulumi.Bool(true),
				"selfHeal": pulumi.Bool(true),
			},
			"syncOptions": pulumi.StringArray{pulumi.String("CreateNamespace=true")},
		},
	}
}

func (a *ArgoCDArgs) validate() error {
	var errs []error
	if a.Repo == "" {
		errs = append(errs, errors.New("repo is required: the Git repository the root Application syncs"))
	}
	if a.Path == "" || a.Revision == "" {
		errs = append(errs, errors.New("path and revision are required (use . and HEAD for the whole default branch)"))
	}
	if a.LoadBalancerIP != "" {
		if _, err := netip.ParseAddr(a.LoadBalancerIP); err != nil {
			errs = append(errs, fmt.Errorf("loadBalancerIP %q is not an IP address", a.LoadBalancerIP))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("argocd: %w", err)
	}
	return nil
}
