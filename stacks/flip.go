package stacks

import (
	"context"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/inventory"
)

// pulumiManagerPrefix starts the field manager names the Pulumi kubernetes
// provider applies objects with (server-side apply: pulumi-kubernetes-<id>,
// kept in the stack's state per object).
const pulumiManagerPrefix = "pulumi-kubernetes-"

// flipRoutes moves traffic before the Pulumi update of a promote or
// rollback: a Pulumi run costs seconds of CLI starts and a refresh before
// it changes anything, and clients should not wait for them. For every app
// whose step only moves traffic between what already runs
// (apps.FastRoutes), and whose Deployments behind the new routes are
// rolled out and available now, the changed routing objects are applied
// as rendered, under the field manager that Pulumi's provider applied them
// with: the update that follows applies the same objects under the same
// name, so it changes nothing on the cluster, and the objects stay Pulumi's
// alone. Anything unusual (an object Pulumi did not apply, a Deployment
// still rolling out) leaves the app to the Pulumi update, in its order;
// the update runs either way and is what records the step.
func flipRoutes(ctx context.Context, gate *release.Gate, dyn dynamic.Interface, inv *inventory.Inventory, prev, next map[string]release.State, notes io.Writer) (moved []string) {
	for i, app := range inv.Apps {
		was, ok1 := prev[app.Name]
		now, ok2 := next[app.Name]
		if !ok1 || !ok2 {
			continue
		}
		opts := apps.Options{SecretEnv: inv.EnvFromEnvironment(i)}
		before, err := apps.Render(app, was.Release, opts)
		if err != nil {
			continue
		}
		after, err := apps.Render(app, now.Release, opts)
		if err != nil {
			continue
		}
		routes := apps.FastRoutes(before, after)
		if len(routes) == 0 {
			continue
		}
		if why := notReady(ctx, gate, dyn, apps.Deps(routes, after)); why != "" {
			fmt.Fprintf(notes, "%s: the routes move with the update: %s\n", app.Name, why)
			continue
		}
		managers := map[string]string{}
		for _, r := range routes {
			m, why := pulumiManager(ctx, dyn, r)
			if why != "" {
				fmt.Fprintf(notes, "%s: the routes move with the update: %s\n", app.Name, why)
				managers = nil
				break
			}
			managers[apps.Key(r)] = m
		}
		if managers == nil {
			continue
		}
		ok := true
		for _, r := range routes {
			_, err := resourceOf(dyn, r).Apply(ctx, r.GetName(), r, metav1.ApplyOptions{FieldManager: managers[apps.Key(r)], Force: true})
			if err != nil {
				fmt.Fprintf(notes, "%s: moving %s ahead of the update failed, the update moves it: %v\n", app.Name, apps.Key(r), err)
				ok = false
				break
			}
		}
		if ok {
			moved = append(moved, app.Name)
		}
	}
	return moved
}

// resourceOf is the dynamic client of obj's kind in the apps' namespace
// (every kind Render makes is named by the API as its lowercase plural).
func resourceOf(dyn dynamic.Interface, obj *unstructured.Unstructured) dynamic.ResourceInterface {
	gvr, _ := meta.UnsafeGuessKindToResource(obj.GroupVersionKind())
	return dyn.Resource(gvr).Namespace(apps.DefaultNamespace)
}

// pulumiManager is the field manager Pulumi's provider applied obj's live
// counterpart with, or why there is none to use.
func pulumiManager(ctx context.Context, dyn dynamic.Interface, obj *unstructured.Unstructured) (string, string) {
	live, err := resourceOf(dyn, obj).Get(ctx, obj.GetName(), metav1.GetOptions{})
	if err != nil {
		return "", fmt.Sprintf("%s: %v", apps.Key(obj), err)
	}
	var found []string
	for _, f := range live.GetManagedFields() {
		if f.Operation == metav1.ManagedFieldsOperationApply && strings.HasPrefix(f.Manager, pulumiManagerPrefix) {
			found = append(found, f.Manager)
		}
	}
	if len(found) != 1 {
		return "", fmt.Sprintf("%s is applied by %d Pulumi field managers, not one", apps.Key(obj), len(found))
	}
	return found[0], ""
}

// notReady says which of objs (Services and Deployments behind the new
// routes) is not there, or, for a Deployment, not Available and rolled out
// as the health gates see it; "" when all are.
func notReady(ctx context.Context, gate *release.Gate, dyn dynamic.Interface, objs []*unstructured.Unstructured) string {
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			if reason := gate.DeploymentReady(ctx, o.GetName()); reason != "" {
				return reason
			}
			continue
		}
		if _, err := resourceOf(dyn, o).Get(ctx, o.GetName(), metav1.GetOptions{}); err != nil {
			return fmt.Sprintf("%s: %v", apps.Key(o), err)
		}
	}
	return ""
}
