package apps_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/homelab/rack/addons/addontest"
	"github.com/homelab/rack/apps"
)

// TestServerSideDryRun sends every object of every case and release state
// to a real kube-apiserver with Traefik's CRDs installed (read from the
// pinned Traefik module), as a create with dryRun=All and strict field
// validation. Then it applies each case's states in order for real, as a
// deliverer would (server-side apply, removed objects deleted), so the API
// server also judges every transition: an immutable field that changed
// (a Deployment's selector) would be refused there.
func TestServerSideDryRun(t *testing.T) {
	_, srv := addontest.Start(t, (*addontest.Server).InstallTraefikCRDs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	namespace := func(name string) {
		t.Helper()
		ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}
		if err := srv.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	namespace(apps.DefaultNamespace)

	t.Run("every object", func(t *testing.T) {
		n := 0
		for _, rc := range renderCases() {
			for _, st := range states(t, rc.app) {
				for _, o := range render(t, rc.app, st.rel) {
					if err := srv.DryRun(ctx, o.DeepCopy().Object); err != nil {
						t.Errorf("%s %s: %s refused: %v", rc.name, st.name, apps.Key(o), err)
					}
					n++
				}
			}
		}
		t.Logf("%d objects accepted (%s CRDs)", n, addontest.TraefikCRDModule)
	})

	t.Run("secret env", func(t *testing.T) {
		app := mysql()
		rel, _ := apps.Deploy(app, apps.Release{})
		objs, err := apps.Render(app, rel, apps.Options{SecretEnv: []string{"MYSQL_PASSWORD"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if err := srv.DryRun(ctx, o.DeepCopy().Object); err != nil {
				t.Errorf("%s refused: %v", apps.Key(o), err)
			}
		}
	})

	t.Run("every transition", func(t *testing.T) {
		for i, rc := range renderCases() {
			ns := fmt.Sprintf("release-%d", i)
			namespace(ns)
			live := map[string]*unstructured.Unstructured{}
			for _, st := range states(t, rc.app) {
				objs, err := apps.Render(rc.app, st.rel, apps.Options{Namespace: ns})
				if err != nil {
					t.Fatal(err)
				}
				next := map[string]*unstructured.Unstructured{}
				for _, o := range objs {
					if err := serverApply(ctx, srv, o); err != nil {
						t.Errorf("%s → %s: apply %s: %v", rc.name, st.name, apps.Key(o), err)
					}
					next[apps.Key(o)] = o
				}
				for k, o := range live {
					if next[k] == nil {
						if err := client(srv, o).Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil {
							t.Errorf("%s → %s: delete %s: %v", rc.name, st.name, k, err)
						}
					}
				}
				live = next
			}
		}
	})

	// The transitions check has teeth: a Deployment whose selector changed
	// between two states is refused.
	t.Run("a selector change is refused", func(t *testing.T) {
		namespace("selector-change")
		app := webApp("blue-green")
		rel, _ := apps.Deploy(app, apps.Release{})
		objs, err := apps.Render(app, rel, apps.Options{Namespace: "selector-change"})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if o.GetKind() != "Deployment" {
				continue
			}
			if err := serverApply(ctx, srv, o); err != nil {
				t.Fatal(err)
			}
			changed := o.DeepCopy()
			for _, path := range [][]string{{"spec", "selector", "matchLabels"}, {"spec", "template", "metadata", "labels"}} {
				if err := unstructured.SetNestedField(changed.Object, "stable", append(path, apps.LabelTrack)...); err != nil {
					t.Fatal(err)
				}
			}
			err := serverApply(ctx, srv, changed)
			if err == nil || !strings.Contains(err.Error(), "field is immutable") {
				t.Fatalf("a changed selector was applied: %v", err)
			}
		}
	})

	// The check must be able to fail: Traefik objects with a misspelt
	// field, a wrong type, a value outside an enum.
	t.Run("broken objects are refused", func(t *testing.T) {
		meta := map[string]any{"name": "broken", "namespace": apps.DefaultNamespace}
		tests := []struct {
			name string
			obj  map[string]any
			want string
		}{
			{"misspelt weight", map[string]any{
				"apiVersion": apps.TraefikAPIVersion, "kind": "TraefikService", "metadata": meta,
				"spec": map[string]any{"weighted": map[string]any{"services": []any{map[string]any{"name": "web-blue", "port": 80, "weigth": 5}}}},
			}, `unknown field "spec.weighted.services[0].weigth"`},
			{"percent as a string", map[string]any{
				"apiVersion": apps.TraefikAPIVersion, "kind": "TraefikService", "metadata": meta,
				"spec": map[string]any{"mirroring": map[string]any{"name": "web-blue", "port": 80, "mirrors": []any{map[string]any{"name": "web-green", "port": 80, "percent": "10"}}}},
			}, "spec.mirroring.mirrors[0].percent"},
			{"route kind outside the enum", map[string]any{
				"apiVersion": apps.TraefikAPIVersion, "kind": "IngressRoute", "metadata": meta,
				"spec": map[string]any{"routes": []any{map[string]any{"kind": "Rules", "match": "Host(`x`)"}}},
			}, "spec.routes[0].kind"},
			{"preStop sleep without seconds", map[string]any{
				"apiVersion": "v1", "kind": "Pod", "metadata": meta,
				"spec": map[string]any{"containers": []any{map[string]any{"name": "a", "image": "a:1",
					"lifecycle": map[string]any{"preStop": map[string]any{"sleep": map[string]any{"second": 10}}}}}},
			}, `unknown field "spec.containers[0].lifecycle.preStop.sleep.second"`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := srv.DryRun(ctx, tt.obj)
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

var resources = map[string]schema.GroupVersionResource{
	"PersistentVolumeClaim": {Version: "v1", Resource: "persistentvolumeclaims"},
	"Service":               {Version: "v1", Resource: "services"},
	"Deployment":            {Group: "apps", Version: "v1", Resource: "deployments"},
	"PodDisruptionBudget":   {Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
	"TraefikService":        {Group: "traefik.io", Version: "v1alpha1", Resource: "traefikservices"},
	"IngressRoute":          {Group: "traefik.io", Version: "v1alpha1", Resource: "ingressroutes"},
}

func client(srv *addontest.Server, o *unstructured.Unstructured) interface {
	Delete(context.Context, string, metav1.DeleteOptions, ...string) error
	Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*unstructured.Unstructured, error)
} {
	return srv.Dynamic().Resource(resources[o.GetKind()]).Namespace(o.GetNamespace())
}

// serverApply is what a deliverer does: server-side apply, strict.
func serverApply(ctx context.Context, srv *addontest.Server, o *unstructured.Unstructured) error {
	if _, ok := resources[o.GetKind()]; !ok {
		return fmt.Errorf("no resource known for kind %s", o.GetKind())
	}
	body, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	force := true
	_, err = client(srv, o).Patch(ctx, o.GetName(), types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: "rack-test", Force: &force, FieldValidation: "Strict"})
	return err
}
