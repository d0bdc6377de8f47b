// Package longhorn is the Longhorn addon: replicated block storage on the
// disks of the nodes that offer it, and exactly those nodes.
package longhorn

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"

	corev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/core/v1"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/addons/internal/chart"
)

// The pinned Longhorn chart.
const (
	ChartRepo    = "https://charts.longhorn.io"
	ChartVersion = "1.12.1"
)

// DefaultNamespace is where Longhorn runs.
const DefaultNamespace = "longhorn-system"

// StorageClass is the name of the StorageClass the chart creates.
const StorageClass = "longhorn"

// Longhorn's node markers: with createDefaultDiskLabeledNodes on, Longhorn
// makes disks only on nodes labelled config, at the paths the annotation lists.
const (
	LabelCreateDefaultDisk    = "node.longhorn.io/create-default-disk"
	AnnotationDefaultDisksCfg = "node.longhorn.io/default-disks-config"
)

// LonghornArgs configure the addon.
type LonghornArgs struct {
	// Chart overrides the chart source: an absolute local chart folder or an
	// oci:// mirror. Empty means the pinned upstream chart.
	Chart string
	// Namespace defaults to longhorn-system.
	Namespace string
	// Replicas is the replica count of new volumes and of the StorageClass.
	Replicas int
	// DefaultClass makes the longhorn StorageClass the cluster default.
	DefaultClass bool
	// Nodes are the nodes offering disk space, and where.
	Nodes []Node
}

// Node is a node that offers Longhorn a disk.
type Node struct {
	Name string
	// Path is the folder on the node Longhorn stores replicas in.
	Path string
}

// Longhorn is the installed addon.
type Longhorn struct {
	pulumi.ResourceState

	Namespace    pulumi.StringOutput
	Release      *chart.HelmRelease
	StorageClass pulumi.StringOutput
}

// NewLonghorn installs Longhorn and marks the storage nodes' disks.
func NewLonghorn(ctx *pulumi.Context, name string, args *LonghornArgs, opts ...pulumi.ResourceOption) (*Longhorn, error) {
	l := &Longhorn{}
	self, err := chart.Register(ctx, "rack:addons:Longhorn", name, args, (*LonghornArgs).validate, l, opts...)
	if err != nil {
		return nil, err
	}
	// Removing Longhorn from the inventory must not delete its volumes: rack
	// then stops managing it and leaves it running (the listing before the
	// run says so, and how to uninstall it for real). Every child is kept.
	parent := pulumi.Composite(self, pulumi.RetainOnDelete(true))

	// Label the nodes before the chart: the manager reads the markers when it
	// first sees a node, and only then creates its default disk.
	var marks []pulumi.Resource
	for _, n := range args.Nodes {
		disks, err := disksConfig(n.Path)
		if err != nil {
			return nil, err
		}
		p, err := corev1.NewNodePatch(ctx, fmt.Sprintf("%s-%s", name, n.Name), &corev1.NodePatchArgs{
			Metadata: &metav1.ObjectMetaPatchArgs{
				Name:        pulumi.String(n.Name),
				Labels:      pulumi.StringMap{LabelCreateDefaultDisk: pulumi.String("config")},
				Annotations: pulumi.StringMap{AnnotationDefaultDisksCfg: pulumi.String(disks)},
			},
		}, parent)
		if err != nil {
			return nil, err
		}
		marks = append(marks, p)
	}

	l.Namespace, l.Release, err = chart.Release{
		Name:  "longhorn",
		Chart: chart.Pinned{Name: "longhorn", Repo: ChartRepo, Version: ChartVersion}, Source: args.Chart,
		// The manager and instance managers are privileged (they mount host
		// disks and run iSCSI).
		Namespace: cmp.Or(args.Namespace, DefaultNamespace), Privileged: true,
		Values: chartValues(args),
		// Image pulls on a Raspberry Pi are slow; the chart's hooks (pre-upgrade
		// checks) must run, which is why this is a Release, not a Chart.
		Timeout:     900,
		ReleaseOpts: []pulumi.ResourceOption{pulumi.DependsOn(marks)},
	}.Install(ctx, name, parent)
	if err != nil {
		return nil, err
	}
	// Derived from the release so that whoever uses the class waits for it.
	l.StorageClass = l.Release.Status.ApplyT(func(map[string]any) string { return StorageClass }).(pulumi.StringOutput)

	if err := ctx.RegisterResourceOutputs(l, pulumi.Map{
		"namespace":    l.Namespace,
		"storageClass": l.StorageClass,
	}); err != nil {
		return nil, err
	}
	return l, nil
}

// chartValues are rack's settings over the chart's defaults.
func chartValues(a *LonghornArgs) pulumi.Map {
	return pulumi.Map{
		"defaultSettings": pulumi.Map{
			"defaultReplicaCount": pulumi.Int(a.Replicas),
			// Disks only where the inventory says so, never on every node.
			"createDefaultDiskLabeledNodes": pulumi.Bool(true),
		},
		"persistence": pulumi.Map{
			"defaultClass":             pulumi.Bool(a.DefaultClass),
			"defaultClassReplicaCount": pulumi.Int(a.Replicas),
		},
	}
}

// disk is one entry of Longhorn's default-disks-config annotation.
type disk struct {
	Path            string `json:"path"`
	AllowScheduling bool   `json:"allowScheduling"`
}

func disksConfig(path string) (string, error) {
	b, err := json.Marshal([]disk{{Path: path, AllowScheduling: true}})
	return string(b), err
}

func (a *LonghornArgs) validate() error {
	var errs []error
	if len(a.Nodes) == 0 {
		errs = append(errs, errors.New("no node offers storage: Longhorn would have no disk"))
	}
	if a.Replicas < 1 || a.Replicas > len(a.Nodes) {
		errs = append(errs, fmt.Errorf("%d replicas: must be between 1 and the %d node(s) offering storage", a.Replicas, len(a.Nodes)))
	}
	seen := map[string]bool{}
	for i, n := range a.Nodes {
		if n.Name == "" || n.Path == "" {
			errs = append(errs, fmt.Errorf("nodes[%d]: name and path are required", i))
		}
		if seen[n.Name] {
			errs = append(errs, fmt.Errorf("nodes[%d]: node %q listed twice", i, n.Name))
		}
		seen[n.Name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("longhorn: %w", err)
	}
	return nil
}
