package chart_test

import (
	"strings"
	"testing"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/internal/chart"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// The release's inputs as the provider reads them (property names of the
// helm.sh/v3 Release schema, the compat marker the SDK's NewRelease sets),
// for each place a chart can come from.
func TestReleaseInputs(t *testing.T) {
	pinned := chart.Pinned{Name: "metallb", Repo: "https://metallb.github.io/metallb", Version: "0.16.2"}
	tests := []struct {
		name, source         string
		chart, version, repo any // want; nil: not sent
		wantErr              string
	}{
		{"pinned repository", "", "metallb", "0.16.2", "https://metallb.github.io/metallb", ""},
		{"oci mirror", "oci://registry.lan/charts/metallb", "oci://registry.lan/charts/metallb", "0.16.2", nil, ""},
		{"packaged chart", "/srv/charts/../charts/metallb-0.16.2.tgz", "/srv/charts/metallb-0.16.2.tgz", nil, nil, ""},
		{"chart folder", "/srv/charts/metallb/", "/srv/charts/metallb", nil, nil, ""},
		{"relative path", "charts/metallb", nil, nil, nil, "must be an absolute path"},
		{"http repository", "https://example.org/metallb-0.16.2.tgz", nil, nil, nil, "oci:// mirror"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := addontest.Run(func(ctx *pulumi.Context) error {
				_, _, err := chart.Release{
					Name: "metallb", Chart: pinned, Source: tt.source, Namespace: "metallb-system",
					Values: pulumi.Map{"crds": pulumi.Map{"enabled": pulumi.Bool(true)}}, Timeout: 300,
				}.Install(ctx, "metallb", pulumi.Parent(nil))
				return err
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "metallb") {
					t.Fatalf("error %v, want one naming metallb and %q", err, tt.wantErr)
				}
				if rs := m.Resources(); len(rs) != 0 {
					t.Errorf("a refused chart source still registered %d resources (first %s)", len(rs), rs[0].Key())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rel, ok := m.Find(chart.HelmReleaseType, "metallb")
			if !ok {
				t.Fatalf("no %s registered: %v", chart.HelmReleaseType, m.Resources())
			}
			for field, want := range map[string]any{
				"chart": tt.chart, "version": tt.version, "repositoryOpts.repo": tt.repo,
				"compat": "true", "name": "metallb", "namespace": "metallb-system",
				"timeout": 300.0, "values.crds.enabled": true,
			} {
				if got := rel.Field(field); got != want {
					t.Errorf("%s = %#v, want %#v", field, got, want)
				}
			}
			if tt.repo == nil && rel.Field("repositoryOpts") != nil {
				t.Errorf("repositoryOpts %v sent for a chart that is not in a repository", rel.Field("repositoryOpts"))
			}
			ns, _ := m.Find("kubernetes:core/v1:Namespace", "metallb")
			if !strings.Contains(strings.Join(rel.DependsOn, " "), ns.Key()) {
				t.Errorf("the release does not wait for its namespace: %v", rel.DependsOn)
			}
		})
	}
}
