package longhorn_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/addons/longhorn"
)

const (
	typComponent = "rack:addons:Longhorn"
	typRelease   = "kubernetes:helm.sh/v3:Release"
	typNodePatch = "kubernetes:core/v1:NodePatch"
	typNamespace = "kubernetes:core/v1:Namespace"
)

func TestLonghorn(t *testing.T) {
	tests := []struct {
		name  string
		args  longhorn.LonghornArgs
		chart string
	}{
		{"two storage nodes, default class", longhorn.LonghornArgs{Replicas: 2, DefaultClass: true, Nodes: []longhorn.Node{
			{Name: "pinecone-1", Path: "/var/lib/longhorn"}, {Name: "potato-7", Path: "/mnt/ssd/longhorn"}}}, "longhorn"},
		{"one node, not the default class", longhorn.LonghornArgs{Replicas: 1, Nodes: []longhorn.Node{
			{Name: "solo", Path: "/data"}}}, "longhorn"},
		{"oci mirror", longhorn.LonghornArgs{Chart: "oci://registry.lan/longhorn", Replicas: 1, Nodes: []longhorn.Node{
			{Name: "solo", Path: "/data"}}}, "oci://registry.lan/longhorn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var class string
			m := addontest.MustRun(t, func(ctx *pulumi.Context) error {
				l, err := longhorn.NewLonghorn(ctx, "longhorn", &tt.args)
				if err != nil {
					return err
				}
				l.StorageClass.ApplyT(func(s string) error { class = s; return nil })
				return nil
			})
			m.Component(t, typComponent, "longhorn")
			for _, r := range m.Resources() {
				// Taking Longhorn out of the inventory must never delete
				// its volumes: every child stays in the cluster.
				if r.Custom && !r.RetainOnDelete {
					t.Errorf("%s would be deleted with the addon (and the volumes with it): want RetainOnDelete", r.Key())
				}
			}
			if class != "longhorn" {
				t.Errorf("StorageClass output %q", class)
			}
			ns, _ := m.Find(typNamespace, "longhorn")
			if ns.Field("metadata.name") != "longhorn-system" {
				t.Errorf("namespace %v", ns.Field("metadata.name"))
			}

			rel, ok := m.Find(typRelease, "longhorn")
			if !ok {
				t.Fatal("no release")
			}
			want := map[string]any{
				"name":      "longhorn",
				"namespace": "longhorn-system",
				"chart":     tt.chart,
				"version":   longhorn.ChartVersion,
				"values.defaultSettings.defaultReplicaCount":           float64(tt.args.Replicas),
				"values.defaultSettings.createDefaultDiskLabeledNodes": true,
				"values.persistence.defaultClass":                      tt.args.DefaultClass,
				"values.persistence.defaultClassReplicaCount":          float64(tt.args.Replicas),
			}
			for path, w := range want {
				if got := rel.Field(path); got != w {
					t.Errorf("release %s = %v, want %v", path, got, w)
				}
			}

			patches := m.OfType(typNodePatch)
			if len(patches) != len(tt.args.Nodes) {
				t.Fatalf("%d node patches, want one per storage node (%d)", len(patches), len(tt.args.Nodes))
			}
			for _, n := range tt.args.Nodes {
				p, ok := m.Find(typNodePatch, "longhorn-"+n.Name)
				if !ok || p.Field("metadata.name") != n.Name {
					t.Fatalf("no NodePatch of node %s", n.Name)
				}
				if got := p.Field("metadata.labels").(map[string]any)[longhorn.LabelCreateDefaultDisk]; got != "config" {
					t.Errorf("%s: label %s = %v, want config", n.Name, longhorn.LabelCreateDefaultDisk, got)
				}
				raw, _ := p.Field("metadata.annotations").(map[string]any)[longhorn.AnnotationDefaultDisksCfg].(string)
				var disks []struct {
					Path            string `json:"path"`
					AllowScheduling bool   `json:"allowScheduling"`
				}
				if err := json.Unmarshal([]byte(raw), &disks); err != nil || len(disks) != 1 || disks[0].Path != n.Path || !disks[0].AllowScheduling {
					t.Errorf("%s: disks annotation %q, want one schedulable disk at %s", n.Name, raw, n.Path)
				}
				// Marked before Longhorn's manager first sees the node.
				if !slices.Contains(rel.DependsOn, p.Key()) {
					t.Errorf("release does not wait for the %s patch", n.Name)
				}
			}
		})
	}
}

func TestLonghornRefuses(t *testing.T) {
	node := longhorn.Node{Name: "a", Path: "/data"}
	tests := []struct {
		name string
		args *longhorn.LonghornArgs
		want string
	}{
		{"no storage nodes", &longhorn.LonghornArgs{Replicas: 1}, "no node offers storage"},
		{"more replicas than nodes", &longhorn.LonghornArgs{Replicas: 2, Nodes: []longhorn.Node{node}}, "2 replicas"},
		{"zero replicas", &longhorn.LonghornArgs{Nodes: []longhorn.Node{node}}, "0 replicas"},
		{"node twice", &longhorn.LonghornArgs{Replicas: 1, Nodes: []longhorn.Node{node, node}}, "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := addontest.Run(func(ctx *pulumi.Context) error {
				_, err := longhorn.NewLonghorn(ctx, "longhorn", tt.args)
				return err
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}
