package chart

import (
	"fmt"

	helmv3 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/helm/v3"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Release is what every addon installs first: a namespace and, in it, a
// Helm release of its pinned chart.
type Release struct {
	// Name is the Helm release's name (and the addon's, in errors).
	Name  string
	Chart Pinned
	// Source overrides where the chart comes from (see charts.Pinned.Apply).
	Source string
	// Namespace is created, Privileged as Namespace says.
	Namespace  string
	Privileged bool
	Values     pulumi.MapInput
	// Timeout is how long Helm waits for the release to be ready.
	Timeout int
	// NamespaceOpts and ReleaseOpts are added to each child's options.
	NamespaceOpts, ReleaseOpts []pulumi.ResourceOption
}

// Install creates the namespace and the release, both children of parent
// named after resource, and returns the namespace's name (an output, so
// whoever uses it waits for the namespace) and the release.
func (r Release) Install(ctx *pulumi.Context, resource string, parent pulumi.ResourceOption) (pulumi.StringOutput, *helmv3.Release, error) {
	ns, err := Namespace(ctx, resource, r.Namespace, r.Privileged, append([]pulumi.ResourceOption{parent}, r.NamespaceOpts...)...)
	if err != nil {
		return pulumi.StringOutput{}, nil, err
	}
	nsName := ns.Metadata.Name().Elem()
	args := &helmv3.ReleaseArgs{
		Name:      pulumi.String(r.Name),
		Namespace: nsName,
		Values:    r.Values,
		Timeout:   pulumi.Int(r.Timeout),
	}
	if err := r.Chart.Apply(args, r.Source); err != nil {
		return pulumi.StringOutput{}, nil, fmt.Errorf("%s: %w", r.Name, err)
	}
	rel, err := helmv3.NewRelease(ctx, resource, args, append([]pulumi.ResourceOption{parent}, r.ReleaseOpts...)...)
	if err != nil {
		return pulumi.StringOutput{}, nil, err
	}
	return nsName, rel, nil
}
