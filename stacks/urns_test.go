package stacks

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/addontest"
)

// TestURNsStayPut pins the URN of everything rack's programs register for
// the example inventories. The engine keys a stack's state on URNs: a
// resource whose type, name or parent changes is created anew and the old
// one deleted on the next rack up: for a Helm release, a helm uninstall of
// a running addon (Longhorn, under the volumes). When one must change, give
// the resource a pulumi.Aliases option with its old URN, so existing stacks
// keep theirs, and update the list here.
func TestURNsStayPut(t *testing.T) {
	// The programs rack up runs, with their providers; the kubeconfig is
	// only handed to the provider.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inv := loadFile("../inventory/rack.yaml")(t)
	platform, err := platformRun(inv, Options{Kubeconfig: kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	// Every app released and a candidate under way (the slots, canaries
	// and mirrors a release adds), and an app with secrets and a volume.
	apps, err := appsRun(inv, withCandidates(t, inv, deployedStates(t, inv)), AppsOptions{Options: Options{Kubeconfig: kubeconfig}})
	if err != nil {
		t.Fatal(err)
	}
	ghost := ghostMySQL(t)
	ghostApps, err := appsRun(ghost, deployedStates(t, ghost), AppsOptions{Options: Options{Kubeconfig: kubeconfig}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		program pulumi.RunFunc
		want    []string
	}{
		{"platform stack of inventory/rack.yaml", platform.program, wantPlatformURNs},
		{"apps stack of inventory/rack.yaml, candidates under way", apps.program, wantAppsURNs},
		{"apps stack of inventory/examples/ghost-mysql.yaml", ghostApps.program, wantGhostURNs},
	} {
		var got []string
		for _, r := range addontest.MustRun(t, tc.program).Resources() {
			u := resource.URN(r.URN)
			got = append(got, string(u.QualifiedType())+"::"+u.Name())
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			var diff []string
			for _, u := range got {
				if !slices.Contains(tc.want, u) {
					diff = append(diff, "  new:  "+u)
				}
			}
			for _, u := range tc.want {
				if !slices.Contains(got, u) {
					diff = append(diff, "  gone: "+u)
				}
			}
			t.Errorf("%s: URNs changed; an existing stack would delete and recreate these (add pulumi.Aliases, then update the list):\n%s\nnow:\n\t%q",
				tc.name, strings.Join(diff, "\n"), got)
		}
	}
}

var wantPlatformURNs = []string{
	"pulumi:pulumi:Stack$pulumi:providers:kubernetes::rack",
	"pulumi:pulumi:Stack$rack:addons:ArgoCD::argocd",
	"pulumi:pulumi:Stack$rack:addons:LocalPV::localpv",
	"pulumi:pulumi:Stack$rack:addons:Longhorn::longhorn",
	"pulumi:pulumi:Stack$rack:addons:MetalLB::metallb",
	"pulumi:pulumi:Stack$rack:addons:Traefik::traefik",
	"rack:addons:ArgoCD$kubernetes:argoproj.io/v1alpha1:Application::argocd-root",
	"rack:addons:ArgoCD$kubernetes:core/v1:Namespace::argocd",
	"rack:addons:ArgoCD$kubernetes:helm.sh/v3:Release::argocd",
	"rack:addons:LocalPV$kubernetes:core/v1:PersistentVolume::localpv-storage-pv",
	"rack:addons:LocalPV$kubernetes:storage.k8s.io/v1:StorageClass::localpv",
	"rack:addons:Longhorn$kubernetes:core/v1:Namespace::longhorn",
	"rack:addons:Longhorn$kubernetes:core/v1:NodePatch::longhorn-pinecone-1",
	"rack:addons:Longhorn$kubernetes:core/v1:NodePatch::longhorn-potato-7",
	"rack:addons:Longhorn$kubernetes:helm.sh/v3:Release::longhorn",
	"rack:addons:MetalLB$kubernetes:core/v1:Namespace::metallb",
	"rack:addons:MetalLB$kubernetes:helm.sh/v3:Release::metallb",
	"rack:addons:MetalLB$kubernetes:metallb.io/v1beta1:IPAddressPool::metallb-production",
	"rack:addons:MetalLB$kubernetes:metallb.io/v1beta1:L2Advertisement::metallb-production",
	"rack:addons:Traefik$kubernetes:core/v1:Namespace::traefik",
	"rack:addons:Traefik$kubernetes:helm.sh/v3:Release::traefik",
}

var wantAppsURNs = []string{
	"pulumi:pulumi:Stack$kubernetes:core/v1:Namespace::apps",
	"pulumi:pulumi:Stack$pulumi:providers:kubernetes::rack-apps",
	"pulumi:pulumi:Stack$rack:apps:App::frontendweb",
	"pulumi:pulumi:Stack$rack:apps:App::ghost",
	"pulumi:pulumi:Stack$rack:apps:App::postgresql",
	"rack:apps:App$kubernetes:apps/v1:Deployment::frontendweb-blue",
	"rack:apps:App$kubernetes:apps/v1:Deployment::frontendweb-green",
	"rack:apps:App$kubernetes:apps/v1:Deployment::ghost",
	"rack:apps:App$kubernetes:apps/v1:Deployment::postgresql",
	"rack:apps:App$kubernetes:core/v1:PersistentVolumeClaim::ghost-data",
	"rack:apps:App$kubernetes:core/v1:PersistentVolumeClaim::postgresql-data",
	"rack:apps:App$kubernetes:core/v1:Service::frontendweb",
	"rack:apps:App$kubernetes:core/v1:Service::frontendweb-blue",
	"rack:apps:App$kubernetes:core/v1:Service::frontendweb-green",
	"rack:apps:App$kubernetes:core/v1:Service::frontendweb-preview",
	"rack:apps:App$kubernetes:core/v1:Service::ghost",
	"rack:apps:App$kubernetes:core/v1:Service::postgresql",
	"rack:apps:App$kubernetes:policy/v1:PodDisruptionBudget::frontendweb",
	"rack:apps:App$kubernetes:policy/v1:PodDisruptionBudget::ghost",
	"rack:apps:App$kubernetes:policy/v1:PodDisruptionBudget::postgresql",
	"rack:apps:App$kubernetes:traefik.io/v1alpha1:IngressRoute::frontendweb",
	"rack:apps:App$kubernetes:traefik.io/v1alpha1:IngressRoute::frontendweb-preview",
	"rack:apps:App$kubernetes:traefik.io/v1alpha1:IngressRoute::ghost",
	"rack:apps:App$kubernetes:traefik.io/v1alpha1:TraefikService::frontendweb",
}

var wantGhostURNs = []string{
	"pulumi:pulumi:Stack$kubernetes:core/v1:Namespace::apps",
	"pulumi:pulumi:Stack$pulumi:providers:kubernetes::rack-apps",
	"pulumi:pulumi:Stack$rack:apps:App::ghost",
	"pulumi:pulumi:Stack$rack:apps:App::mysql",
	"rack:apps:App$kubernetes:apps/v1:Deployment::ghost",
	"rack:apps:App$kubernetes:apps/v1:Deployment::mysql",
	"rack:apps:App$kubernetes:core/v1:PersistentVolumeClaim::ghost-data",
	"rack:apps:App$kubernetes:core/v1:PersistentVolumeClaim::mysql-data",
	"rack:apps:App$kubernetes:core/v1:Secret::ghost-env",
	"rack:apps:App$kubernetes:core/v1:Secret::mysql-env",
	"rack:apps:App$kubernetes:core/v1:Service::ghost",
	"rack:apps:App$kubernetes:core/v1:Service::mysql",
	"rack:apps:App$kubernetes:policy/v1:PodDisruptionBudget::ghost",
	"rack:apps:App$kubernetes:policy/v1:PodDisruptionBudget::mysql",
	"rack:apps:App$kubernetes:traefik.io/v1alpha1:IngressRoute::ghost",
}
