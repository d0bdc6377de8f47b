package stacks

import (
	"slices"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// TestRemoval: what the state holds and the program no longer registers is
// listed, deleted or kept (retainOnDelete), with its addon and name; the
// planned URNs are the engine's (parent type in them).
func TestRemoval(t *testing.T) {
	full := parse(edgeNodes + `
addons:
  localPV: {}
  argocd: {repo: "https://git.lan/gitops.git"}
`)(t)
	r := &run{stack: "edge", program: func(ctx *pulumi.Context) error { _, err := deploy(ctx, full); return err }}
	planned, err := plannedURNs(r.program, Project, "edge")
	if err != nil {
		t.Fatal(err)
	}
	app := resource.URN("urn:pulumi:edge::rack::rack:addons:ArgoCD$kubernetes:argoproj.io/v1alpha1:Application::argocd-root")
	if !planned[app] {
		t.Fatalf("planned URNs lack %s: %v", app, planned)
	}

	// The state of a run with everything; now the inventory has localPV only.
	var d apitype.DeploymentV3
	for urn := range planned {
		res := apitype.ResourceV3{URN: urn, Type: urn.Type(), Custom: !strings.HasPrefix(string(urn.Type()), "rack:addons:")}
		if p := urn.QualifiedType(); strings.Contains(string(p), "$") {
			parentType := string(p)[:strings.LastIndex(string(p), "$")]
			for u := range planned {
				if string(u.Type()) == parentType {
					res.Parent = u
				}
			}
		}
		switch urn.Name() {
		case "argocd-root":
			res.Outputs = map[string]any{"metadata": map[string]any{"name": "root", "namespace": "argocd"}}
		case "argocd":
			if urn.Type() == "kubernetes:helm.sh/v3:Release" {
				res.Outputs = map[string]any{"name": "argocd", "namespace": "argocd"}
			}
			if urn.Type() == "kubernetes:core/v1:Namespace" {
				res.Outputs = map[string]any{"metadata": map[string]any{"name": "argocd"}}
				res.RetainOnDelete = true
			}
		}
		d.Resources = append(d.Resources, res)
	}
	less := parse(edgeNodes + "addons:\n  localPV: {}\n")(t)
	r.program = func(ctx *pulumi.Context) error { _, err := deploy(ctx, less); return err }
	rm, err := r.removal(&d)
	if err != nil {
		t.Fatal(err)
	}
	wantDeleted := []Removed{{"argocd", "Application", "argocd/root"}, {"argocd", "Release", "argocd/argocd"}}
	wantKept := []Removed{{"argocd", "Namespace", "argocd"}}
	if !slices.Equal(rm.Deleted, wantDeleted) || !slices.Equal(rm.Kept, wantKept) {
		t.Errorf("removal %+v\nwant deleted %v, kept %v", rm, wantDeleted, wantKept)
	}
	var b strings.Builder
	if err := rm.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
	if err := confirmRemoval(rm, Options{}); err == nil || !strings.Contains(err.Error(), "rack up --yes") {
		t.Errorf("no confirmation: %v", err)
	}

	// Nothing removed: nothing to confirm.
	r.program = func(ctx *pulumi.Context) error { _, err := deploy(ctx, full); return err }
	if rm, err := r.removal(&d); err != nil || !rm.Empty() {
		t.Errorf("same inventory: %+v, %v", rm, err)
	}
}
