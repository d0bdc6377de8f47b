package stacks

import (
	"context"
	"strings"
	"testing"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/argocd"
	"github.com/homelab/rack/addons/metallb"
)

// apiServer starts the test control plane with the upstream CRDs of the
// pinned charts installed, read from the Go module cache.
func apiServer(t *testing.T) *addontest.Server {
	t.Helper()
	_, srv := addontest.Start(t, func(srv *addontest.Server, ctx context.Context) error {
		var files []string
		for _, src := range []struct{ module, pattern string }{
			{metallb.CRDModule, "config/crd/bases/metallb.io_*.yaml"},
			{argocd.CRDModule, "manifests/crds/application-crd.yaml"},
		} {
			dir, err := addontest.ModuleDir(ctx, src.module)
			if err != nil {
				return err
			}
			f, err := addontest.CRDFiles(dir, src.pattern)
			if err != nil {
				return err
			}
			files = append(files, f...)
		}
		t.Logf("installing %d upstream CRD files (%s, %s)", len(files), metallb.CRDModule, argocd.CRDModule)
		return srv.InstallCRDs(ctx, files...)
	})
	return srv
}

// TestServerSideDryRun sends every Kubernetes object the program registers
// (Helm releases aside) to a real kube-apiserver with dryRun=All and strict
// field validation, for each example inventory and edge case.
func TestServerSideDryRun(t *testing.T) {
	srv := apiServer(t)
	ctx := context.Background()

	for _, tc := range programCases() {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := runProgram(t, tc.inv(t))
			// NodePatches are server-side apply patches of existing Nodes
			// (k3s registers them before the stacks run).
			for _, p := range m.OfType(typNodePatch) {
				node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": p.Field("metadata.name")}}
				if err := srv.Create(ctx, node); err != nil {
					t.Fatal(err)
				}
			}
			n, err := srv.DryRunAll(ctx, m.Resources())
			if err != nil {
				t.Fatalf("the API server refused objects of the program:\n%v", err)
			}
			want := 0
			for _, r := range m.Resources() {
				if addontest.IsKubernetesObject(r) {
					want++
				}
			}
			if n != want || n == 0 {
				t.Fatalf("dry-ran %d objects, the program registered %d", n, want)
			}
			t.Logf("%d objects accepted", n)
		})
	}

	// The check must be able to fail: misspelt fields and wrong types.
	t.Run("broken objects are refused", func(t *testing.T) {
		ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "metallb-system"}}
		if err := srv.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
		if err := srv.Create(ctx, map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": "broken-node"}}); err != nil {
			t.Fatal(err)
		}
		meta := func(name string) map[string]any {
			return map[string]any{"name": name, "namespace": "metallb-system"}
		}
		tests := []struct {
			name  string
			obj   map[string]any
			apply bool
			want  string
		}{
			{"misspelt IPAddressPool field", map[string]any{
				"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": meta("typo"),
				"spec": map[string]any{"adresses": []any{"10.0.0.1-10.0.0.9"}},
			}, false, `unknown field "spec.adresses"`},
			{"BGPPeer ASN as a string", map[string]any{
				"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": meta("asn"),
				"spec": map[string]any{"myASN": "64513", "peerASN": 64512, "peerAddress": "10.0.0.1"},
			}, false, "spec.myASN"},
			{"Application without its destination's type", map[string]any{
				"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": map[string]any{"name": "root", "namespace": "metallb-system"},
				"spec": map[string]any{"project": "default", "source": map[string]any{"repoURL": "https://x/y"}, "destination": "in-cluster"},
			}, false, "spec.destination"},
			{"PersistentVolume with a bad quantity", map[string]any{
				"apiVersion": "v1", "kind": "PersistentVolume", "metadata": map[string]any{"name": "pv"},
				"spec": map[string]any{"capacity": map[string]any{"storage": "lots"}, "accessModes": []any{"ReadWriteOnce"}, "local": map[string]any{"path": "/x"}},
			}, false, "quantities must match"},
			{"NodePatch with a misspelt field", map[string]any{
				"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": "broken-node", "labelz": map[string]any{"a": "b"}},
			}, true, "metadata.labelz: field not declared in schema"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var err error
				if tt.apply {
					err = srv.DryRunApply(ctx, tt.obj)
				} else {
					err = srv.DryRun(ctx, tt.obj)
				}
				if err == nil {
					t.Fatal("the API server accepted a broken object: the dry run proves nothing")
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("refused with %v, want a message containing %q", err, tt.want)
				}
			})
		}
	})
}
