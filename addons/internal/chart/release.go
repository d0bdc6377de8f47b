package chart

import (
	"fmt"
	"reflect"

	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/utilities"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Release is what every addon installs first: a namespace and, in it, a
// Helm release of its pinned chart.
type Release struct {
	// Name is the Helm release's name (and the addon's, in errors).
	Name  string
	Chart Pinned
	// Source overrides where the chart comes from (see charts.Pinned.Ref).
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
func (r Release) Install(ctx *pulumi.Context, resource string, parent pulumi.ResourceOption) (pulumi.StringOutput, *HelmRelease, error) {
	ref, err := r.Chart.Ref(r.Source)
	if err != nil {
		return pulumi.StringOutput{}, nil, fmt.Errorf("%s: %w", r.Name, err)
	}
	ns, err := Namespace(ctx, resource, r.Namespace, r.Privileged, append([]pulumi.ResourceOption{parent}, r.NamespaceOpts...)...)
	if err != nil {
		return pulumi.StringOutput{}, nil, err
	}
	nsName := ns.Metadata.Name().Elem()
	args := &HelmReleaseArgs{
		Chart:     pulumi.String(ref.Chart),
		Name:      pulumi.String(r.Name),
		Namespace: nsName,
		Values:    r.Values,
		Timeout:   pulumi.Int(r.Timeout),
	}
	if ref.Version != "" {
		args.Version = pulumi.String(ref.Version)
	}
	if ref.Repo != "" {
		args.RepositoryOpts = pulumi.StringMap{"repo": pulumi.String(ref.Repo)}
	}
	rel, err := NewHelmRelease(ctx, resource, args, append([]pulumi.ResourceOption{parent}, r.ReleaseOpts...)...)
	if err != nil {
		return pulumi.StringOutput{}, nil, err
	}
	return nsName, rel, nil
}

// HelmReleaseType is the provider's Helm release resource.
const HelmReleaseType = "kubernetes:helm.sh/v3:Release"

// HelmRelease is the provider's kubernetes:helm.sh/v3:Release, registered
// here rather than through the SDK's helm/v3 package: that package imports
// the SDK's yaml package and with it all 66 API-group packages (22 MB of
// generated Go that rack's build would compile, and every test binary
// link, for this one resource). The inputs rack sets go over the wire as
// the SDK's NewRelease sends them; of the outputs only status is read.
type HelmRelease struct {
	pulumi.CustomResourceState

	// Status is the release's status object (name, namespace, revision,
	// status, chart, version, ...), known once Helm is done.
	Status pulumi.MapOutput `pulumi:"status"`
}

// HelmReleaseArgs are the release's inputs rack sets; the provider's
// schema (helm.sh/v3 Release) has more, all optional.
type HelmReleaseArgs struct {
	// Chart is a chart name in RepositoryOpts' repo, an oci:// reference,
	// or a local archive or folder.
	Chart     pulumi.StringInput
	Version   pulumi.StringPtrInput
	Name      pulumi.StringPtrInput
	Namespace pulumi.StringPtrInput
	// RepositoryOpts holds "repo", the repository URL.
	RepositoryOpts pulumi.StringMapInput
	Values         pulumi.MapInput
	// Timeout is in seconds.
	Timeout pulumi.IntPtrInput
	// Compat is set to "true" by NewHelmRelease, as the SDK's NewRelease
	// sets it (a marker the provider reads; not a user setting).
	Compat pulumi.StringPtrInput
}

// helmReleaseArgs is the plain shape of HelmReleaseArgs: its pulumi tags
// are the property names the provider reads.
type helmReleaseArgs struct {
	Chart          string                 `pulumi:"chart"`
	Version        *string                `pulumi:"version"`
	Name           *string                `pulumi:"name"`
	Namespace      *string                `pulumi:"namespace"`
	RepositoryOpts map[string]string      `pulumi:"repositoryOpts"`
	Values         map[string]interface{} `pulumi:"values"`
	Timeout        *int                   `pulumi:"timeout"`
	Compat         *string                `pulumi:"compat"`
}

// ElementType tells the SDK how to marshal the args.
func (HelmReleaseArgs) ElementType() reflect.Type {
	return reflect.TypeOf((*helmReleaseArgs)(nil)).Elem()
}

// NewHelmRelease registers a release as the SDK's helmv3.NewRelease does:
// the compat marker and the SDK's plugin version among the options.
func NewHelmRelease(ctx *pulumi.Context, name string, args *HelmReleaseArgs, opts ...pulumi.ResourceOption) (*HelmRelease, error) {
	if args == nil || args.Chart == nil {
		return nil, fmt.Errorf("helm release %s: a chart is required", name)
	}
	args.Compat = pulumi.StringPtr("true")
	var rel HelmRelease
	if err := ctx.RegisterResource(HelmReleaseType, name, args, &rel, utilities.PkgResourceDefaultOpts(opts)...); err != nil {
		return nil, err
	}
	return &rel, nil
}
