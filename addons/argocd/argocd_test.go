package argocd_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/argocd"
)

const (
	typComponent = "rack:addons:ArgoCD"
	typRelease   = "kubernetes:helm.sh/v3:Release"
	typApp       = "kubernetes:argoproj.io/v1alpha1:Application"
	typNamespace = "kubernetes:core/v1:Namespace"
)

func TestArgoCD(t *testing.T) {
	base := argocd.ArgoCDArgs{Repo: "https://github.com/example/homelab-gitops", Path: "apps", Revision: "main"}
	withLB := base
	withLB.LoadBalancerIP = "192.168.1.250"
	mirrored := base
	mirrored.Chart = "/srv/charts/argo-cd-10.1.1.tgz"
	withLB6 := base
	withLB6.LoadBalancerIP = "fd00:10::fe"

	tests := []struct {
		name        string
		args        argocd.ArgoCDArgs
		wantService string
		wantAddress string
		wantChart   string
	}{
		{"cluster IP", base, "ClusterIP", "https://argocd-server.argocd.svc.cluster.local", "argo-cd"},
		{"MetalLB address", withLB, "LoadBalancer", "https://192.168.1.250", "argo-cd"},
		{"IPv6 MetalLB address, in brackets", withLB6, "LoadBalancer", "https://[fd00:10::fe]", "argo-cd"},
		{"packaged chart from a mirror", mirrored, "ClusterIP", "https://argocd-server.argocd.svc.cluster.local", "/srv/charts/argo-cd-10.1.1.tgz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var address string
			m := addontest.MustRun(t, func(ctx *pulumi.Context) error {
				a, err := argocd.NewArgoCD(ctx, "argocd", &tt.args)
				if err != nil {
					return err
				}
				a.Address.ApplyT(func(s string) error { address = s; return nil })
				return nil
			})
			m.Component(t, typComponent, "argocd")
			if address != tt.wantAddress {
				t.Errorf("Address %q, want %q", address, tt.wantAddress)
			}
			ns, _ := m.Find(typNamespace, "argocd")
			if ns.Field("metadata.name") != "argocd" {
				t.Errorf("namespace %v", ns.Field("metadata.name"))
			}
			// Deleting the namespace would delete the apps' Applications.
			if !ns.RetainOnDelete {
				t.Error("the argocd namespace would be deleted with the addon: want RetainOnDelete")
			}

			rel, ok := m.Find(typRelease, "argocd")
			if !ok {
				t.Fatal("no release: the redis secret hook needs a helm/v3 Release")
			}
			if rel.Field("chart") != tt.wantChart || rel.Field("namespace") != "argocd" || rel.Field("name") != "argocd" {
				t.Errorf("release %v in %v named %v", rel.Field("chart"), rel.Field("namespace"), rel.Field("name"))
			}
			if tt.args.Chart == "" && (rel.Field("version") != argocd.ChartVersion || rel.Field("repositoryOpts.repo") != argocd.ChartRepo) {
				t.Errorf("release %v from %v, want the pinned %s", rel.Field("version"), rel.Field("repositoryOpts.repo"), argocd.ChartVersion)
			}
			if got := rel.Field("values.server.service.type"); got != tt.wantService {
				t.Errorf("server service type %v, want %s", got, tt.wantService)
			}
			if tt.args.LoadBalancerIP != "" {
				ann, _ := rel.Field("values.server.service.annotations").(map[string]any)
				if ann["metallb.io/loadBalancerIPs"] != tt.args.LoadBalancerIP {
					t.Errorf("service annotations %v, want MetalLB's loadBalancerIPs", ann)
				}
			}
			if rel.Field("values.fullnameOverride") != "argocd" {
				t.Errorf("fullnameOverride %v: the address assumes argocd-server", rel.Field("values.fullnameOverride"))
			}

			app, ok := m.Find(typApp, "argocd-root")
			if !ok {
				t.Fatal("no root Application")
			}
			if app.Field("metadata.name") != "root" || app.Field("metadata.namespace") != "argocd" {
				t.Errorf("root app %v in %v", app.Field("metadata.name"), app.Field("metadata.namespace"))
			}
			// Deleting the root app must not cascade into the apps' workloads.
			if got := addontest.Strings(app.Field("metadata.finalizers")); slices.Contains(got, argocd.Finalizer) {
				t.Errorf("root app finalizers %v: removing Argo CD would delete every app it synced", got)
			}
			wantSpec := map[string]any{
				"project":     "default",
				"source":      map[string]any{"repoURL": tt.args.Repo, "path": tt.args.Path, "targetRevision": tt.args.Revision},
				"destination": map[string]any{"server": "https://kubernetes.default.svc", "namespace": "argocd"},
				"syncPolicy": map[string]any{
					"automated":   map[string]any{"prune": true, "selfHeal": true},
					"syncOptions": []any{"CreateNamespace=true"},
				},
			}
			if got := app.Field("spec"); !reflect.DeepEqual(got, wantSpec) {
				t.Errorf("root app spec\n got %v\nwant %v", got, wantSpec)
			}
			if !slices.Contains(app.DependsOn, rel.Key()) {
				t.Errorf("root app does not depend on the chart (its CRD): %v", app.DependsOn)
			}
		})
	}
}

func TestArgoCDRefuses(t *testing.T) {
	tests := []struct {
		name string
		args *argocd.ArgoCDArgs
		want string
	}{
		{"no repo", &argocd.ArgoCDArgs{Path: ".", Revision: "HEAD"}, "repo is required"},
		{"no revision", &argocd.ArgoCDArgs{Repo: "https://x/y", Path: "."}, "path and revision"},
		{"bad address", &argocd.ArgoCDArgs{Repo: "https://x/y", Path: ".", Revision: "HEAD", LoadBalancerIP: "argocd.lan"}, "not an IP"},
		{"ftp chart", &argocd.ArgoCDArgs{Repo: "https://x/y", Path: ".", Revision: "HEAD", Chart: "ftp://x/argo-cd"}, "oci:// mirror"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := addontest.Run(func(ctx *pulumi.Context) error {
				_, err := argocd.NewArgoCD(ctx, "argocd", tt.args)
				return err
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestURL(t *testing.T) {
	for host, want := range map[string]string{
		"192.168.1.250":                          "https://192.168.1.250",
		"fd00:10::fe":                            "https://[fd00:10::fe]",
		"FD00:0010:0000::00fe":                   "https://[fd00:10::fe]",
		"::ffff:192.168.1.250":                   "https://[::ffff:192.168.1.250]",
		"argocd-server.argocd.svc.cluster.local": "https://argocd-server.argocd.svc.cluster.local",
	} {
		if got := argocd.URL(host); got != want {
			t.Errorf("URL(%q) = %q, want %q", host, got, want)
		}
	}
}
