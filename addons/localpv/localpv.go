// Package localpv is the local PersistentVolume addon: node-local folders
// offered as statically provisioned PersistentVolumes, bound to their node.
package localpv

import (
	"errors"
	"fmt"

	corev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/core/v1"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	storagev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/storage/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/homelab/rack/addons/internal/chart"
)

// DefaultStorageClass names the StorageClass when LocalPVArgs leave it empty.
const DefaultStorageClass = "local-storage"

// HostnameLabel is the node label the volumes' node affinity selects on.
const HostnameLabel = "kubernetes.io/hostname"

// LocalPVArgs configure the addon.
type LocalPVArgs struct {
	// StorageClass defaults to local-storage.
	StorageClass string
	Volumes      []Volume
}

// Volume is a folder on one node, offered as a PersistentVolume.
type Volume struct {
	// Name is the PersistentVolume's name (cluster-wide).
	Name string
	// Node is the node holding Path.
	Node string
	// Path is an existing folder on the node.
	Path string
	// Capacity is a Kubernetes quantity, like 60Gi.
	Capacity string
}

// LocalPV is the installed addon.
type LocalPV struct {
	pulumi.ResourceState

	StorageClass pulumi.StringOutput
	Volumes      []*corev1.PersistentVolume
}

// NewLocalPV creates the StorageClass and one PersistentVolume per volume.
func NewLocalPV(ctx *pulumi.Context, name string, args *LocalPVArgs, opts ...pulumi.ResourceOption) (*LocalPV, error) {
	l := &LocalPV{}
	self, err := chart.Register(ctx, "rack:addons:LocalPV", name, args, (*LocalPVArgs).validate, l, opts...)
	if err != nil {
		return nil, err
	}
	// A volume or the addon taken out of the inventory leaves its
	// PersistentVolume (and the class) in the cluster: a claim bound to it
	// keeps its data. rack lists them as kept.
	parent := pulumi.Composite(self, pulumi.RetainOnDelete(true))
	className := args.StorageClass
	if className == "" {
		className = DefaultStorageClass
	}

	sc, err := storagev1.NewStorageClass(ctx, name, &storagev1.StorageClassArgs{
		Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String(className)},
		// No provisioner: the volumes exist up front, one per folder.
		Provisioner: pulumi.String("kubernetes.io/no-provisioner"),
		// Bind only once a pod is scheduled, so the scheduler weighs the
		// pod's other constraints together with the volume's node.
		VolumeBindingMode: pulumi.String("WaitForFirstConsumer"),
		ReclaimPolicy:     pulumi.String("Retain"),
	}, parent)
	if err != nil {
		return nil, err
	}
	l.StorageClass = sc.Metadata.Name().Elem()

	for _, v := range args.Volumes {
		pv, err := corev1.NewPersistentVolume(ctx, fmt.Sprintf("%s-%s", name, v.Name), &corev1.PersistentVolumeArgs{
			Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String(v.Name)},
			Spec: &corev1.PersistentVolumeSpecArgs{
				Capacity:    pulumi.StringMap{"storage": pulumi.String(v.Capacity)},
				AccessModes: pulumi.StringArray{pulumi.String("ReadWriteOnce")},
				VolumeMode:  pulumi.String("Filesystem"),
				// The data is the user's: releasing a claim must not wipe it.
				PersistentVolumeReclaimPolicy: pulumi.String("Retain"),
				StorageClassName:              l.StorageClass,
				Local:                         &corev1.LocalVolumeSourceArgs{Path: pulumi.String(v.Path)},
				NodeAffinity: &corev1.VolumeNodeAffinityArgs{
					Required: &corev1.NodeSelectorArgs{
						NodeSelectorTerms: corev1.NodeSelectorTermArray{
							corev1.NodeSelectorTermArgs{
								MatchExpressions: corev1.NodeSelectorRequirementArray{
									corev1.NodeSelectorRequirementArgs{
										Key:      pulumi.String(HostnameLabel),
										Operator: pulumi.String("In"),
										Values:   pulumi.StringArray{pulumi.String(v.Node)},
									},
								},
							},
						},
					},
				},
			},
		}, parent)
		if err != nil {
			return nil, err
		}
		l.Volumes = append(l.Volumes, pv)
	}

	if err := ctx.RegisterResourceOutputs(l, pulumi.Map{"storageClass": l.StorageClass}); err != nil {
		return nil, err
	}
	return l, nil
}

func (a *LocalPVArgs) validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, v := range a.Volumes {
		if v.Name == "" || v.Node == "" || v.Path == "" {
			errs = append(errs, fmt.Errorf("volumes[%d]: name, node and path are required", i))
		}
		if seen[v.Name] {
			errs = append(errs, fmt.Errorf("volumes[%d]: duplicate volume name %q (PersistentVolume names are cluster-wide)", i, v.Name))
		}
		seen[v.Name] = true
		if _, err := resource.ParseQuantity(v.Capacity); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: capacity %q is not a Kubernetes quantity, like 60Gi", v.Name, v.Capacity))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("localpv: %w", err)
	}
	return nil
}
