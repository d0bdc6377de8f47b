package stacks

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/homelab/rack/addons/argocd"
	"github.com/homelab/rack/nodes/kube"
)

// kubeClients connects to the cluster the stacks deploy to, through the
// kubeconfig's current context (what the Pulumi provider uses too).
func kubeClients(kubeconfig []byte) (kubernetes.Interface, dynamic.Interface, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	return kube.NewClients(cfg)
}

func restConfig(kubeconfig []byte) (*rest.Config, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("the kubeconfig: %w", err)
	}
	return cfg, nil
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

var applications = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}

// dropCascade takes Argo CD's resources finalizer off an Application about
// to be deleted, so that deleting it leaves the workloads it synced alone
// (root apps made by older rack versions carry it).
func dropCascade(ctx context.Context, dyn dynamic.Interface, namespace, name string) (bool, error) {
	app, err := dyn.Resource(applications).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fins := app.GetFinalizers()
	i := slices.Index(fins, argocd.Finalizer)
	if i < 0 {
		return false, nil
	}
	// A test-and-remove patch: it fails rather than drop someone else's
	// finalizer if the list changed in between.
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": fmt.Sprintf("/metadata/finalizers/%d", i), "value": argocd.Finalizer},
		{"op": "remove", "path": fmt.Sprintf("/metadata/finalizers/%d", i)},
	})
	if err != nil {
		return false, err
	}
	_, err = dyn.Resource(applications).Namespace(namespace).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{})
	return err == nil, err
}
