// Package chart resolves where an addon's Helm chart comes from: the pinned
// upstream repository, or the override an airgapped rack gives in the
// inventory (addons.<name>.chart).
package chart

import (
	"fmt"
	"path/filepath"
	"strings"

	helmv3 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/helm/v3"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Pinned is a chart in an upstream Helm repository at an exact version.
type Pinned struct {
	Name    string // chart name in the repository, e.g. metallb
	Repo    string // repository URL
	Version string // exact chart version
}

// Apply points args at the chart: the pinned upstream one when override is
// empty; an oci:// mirror of the same pinned version; or a local chart folder
// (an absolute path, taken as it is: its Chart.yaml says the version).
func (p Pinned) Apply(args *helmv3.ReleaseArgs, override string) error {
	switch {
	case override == "":
		args.Chart = pulumi.String(p.Name)
		args.Version = pulumi.String(p.Version)
		args.RepositoryOpts = &helmv3.RepositoryOptsArgs{Repo: pulumi.String(p.Repo)}
	case strings.HasPrefix(override, "oci://"):
		// A mirror carries the same pinned version; the reference names the chart.
		args.Chart = pulumi.String(override)
		args.Version = pulumi.String(p.Version)
	case strings.Contains(override, "://"):
		return fmt.Errorf("chart %q: use a local chart folder or an oci:// mirror of %s %s", override, p.Name, p.Version)
	case !filepath.IsAbs(override):
		// Relative folders are resolved by the caller (against the inventory's
		// folder); here they would depend on the working directory.
		return fmt.Errorf("chart folder %q must be an absolute path", override)
	default:
		args.Chart = pulumi.String(filepath.Clean(override))
	}
	return nil
}
