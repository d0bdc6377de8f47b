package localpv_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/localpv"
)

const (
	typComponent = "rack:addons:LocalPV"
	typClass     = "kubernetes:storage.k8s.io/v1:StorageClass"
	typPV        = "kubernetes:core/v1:PersistentVolume"
)

func TestLocalPV(t *testing.T) {
	tests := []struct {
		name      string
		args      localpv.LocalPVArgs
		wantClass string
	}{
		{"default class, one volume", localpv.LocalPVArgs{Volumes: []localpv.Volume{
			{Name: "storage-pv", Node: "potato-7", Path: "/storage", Capacity: "60Gi"}}}, "local-storage"},
		{"named class, two nodes", localpv.LocalPVArgs{StorageClass: "fast", Volumes: []localpv.Volume{
			{Name: "a", Node: "n1", Path: "/srv/a", Capacity: "1Ti"}, {Name: "b", Node: "n2", Path: "/srv/b", Capacity: "500Mi"}}}, "fast"},
		{"no volumes: the class only", localpv.LocalPVArgs{}, "local-storage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var class string
			m := addontest.MustRun(t, func(ctx *pulumi.Context) error {
				l, err := localpv.NewLocalPV(ctx, "localpv", &tt.args)
				if err != nil {
					return err
				}
				l.StorageClass.ApplyT(func(s string) error { class = s; return nil })
				return nil
			})
			m.Component(t, typComponent, "localpv")
			for _, r := range m.Resources() {
				// A volume taken out of the inventory stays in the cluster,
				// and a claim bound to it keeps its data.
				if r.Custom && !r.RetainOnDelete {
					t.Errorf("%s would be deleted when taken out of the inventory: want RetainOnDelete", r.Key())
				}
			}
			if class != tt.wantClass {
				t.Errorf("StorageClass output %q, want %q", class, tt.wantClass)
			}
			sc, ok := m.Find(typClass, "localpv")
			if !ok {
				t.Fatal("no StorageClass")
			}
			for path, want := range map[string]any{
				"metadata.name":     tt.wantClass,
				"provisioner":       "kubernetes.io/no-provisioner",
				"volumeBindingMode": "WaitForFirstConsumer",
			} {
				if got := sc.Field(path); got != want {
					t.Errorf("StorageClass %s = %v, want %v", path, got, want)
				}
			}

			pvs := m.OfType(typPV)
			if len(pvs) != len(tt.args.Volumes) {
				t.Fatalf("%d PersistentVolumes, want %d", len(pvs), len(tt.args.Volumes))
			}
			for _, v := range tt.args.Volumes {
				pv, ok := m.Find(typPV, "localpv-"+v.Name)
				if !ok {
					t.Fatalf("no PersistentVolume localpv-%s", v.Name)
				}
				for path, want := range map[string]any{
					"metadata.name":                      v.Name,
					"spec.capacity.storage":              v.Capacity,
					"spec.local.path":                    v.Path,
					"spec.persistentVolumeReclaimPolicy": "Retain",
					"spec.storageClassName":              tt.wantClass,
				} {
					if got := pv.Field(path); got != want {
						t.Errorf("PV %s %s = %v, want %v", v.Name, path, got, want)
					}
				}
				terms, _ := pv.Field("spec.nodeAffinity.required.nodeSelectorTerms").([]any)
				wantTerms := []any{map[string]any{"matchExpressions": []any{map[string]any{
					"key": "kubernetes.io/hostname", "operator": "In", "values": []any{v.Node}}}}}
				if !reflect.DeepEqual(terms, wantTerms) {
					t.Errorf("PV %s node affinity %v, want required hostname In [%s]", v.Name, terms, v.Node)
				}
			}
		})
	}
}

func TestLocalPVRefuses(t *testing.T) {
	tests := []struct {
		name string
		vols []localpv.Volume
		want string
	}{
		{"bad capacity", []localpv.Volume{{Name: "a", Node: "n", Path: "/a", Capacity: "60 gigs"}}, "not a Kubernetes quantity"},
		{"no node", []localpv.Volume{{Name: "a", Path: "/a", Capacity: "1Gi"}}, "name, node and path are required"},
		{"duplicate", []localpv.Volume{{Name: "a", Node: "n", Path: "/a", Capacity: "1Gi"}, {Name: "a", Node: "m", Path: "/b", Capacity: "1Gi"}}, "duplicate volume name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := addontest.Run(func(ctx *pulumi.Context) error {
				_, err := localpv.NewLocalPV(ctx, "localpv", &localpv.LocalPVArgs{Volumes: tt.vols})
				return err
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}
