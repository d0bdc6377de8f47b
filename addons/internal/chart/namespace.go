package chart

import (
	corev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/core/v1"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Namespace creates the namespace an addon's release lives in. Privileged
// namespaces admit pods that need the host (host network, host disks,
// NET_RAW) whatever the cluster's default Pod Security level is.
func Namespace(ctx *pulumi.Context, resource, name string, privileged bool, opts ...pulumi.ResourceOption) (*corev1.Namespace, error) {
	meta := &metav1.ObjectMetaArgs{Name: pulumi.String(name)}
	if privileged {
		meta.Labels = pulumi.StringMap{
			"pod-security.kubernetes.io/enforce": pulumi.String("privileged"),
			"pod-security.kubernetes.io/audit":   pulumi.String("privileged"),
			"pod-security.kubernetes.io/warn":    pulumi.String("privileged"),
		}
	}
	return corev1.NewNamespace(ctx, resource, &corev1.NamespaceArgs{Metadata: meta}, opts...)
}
