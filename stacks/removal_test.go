package stacks

import (
	"os"
	"path/filepath"
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

// TestReadCheckpoint: the file backend's checkpoint is read for the layout
// rack's backends have; every other one is left to `pulumi stack export`,
// and a broken state file is an error naming it.
func TestReadCheckpoint(t *testing.T) {
	const state = `{"version":3,"checkpoint":{"stack":"organization/rack/lab","latest":{"manifest":{"version":"v3.259.0"},"resources":[{"urn":"urn:pulumi:lab::rack::pulumi:pulumi:Stack::rack-lab","type":"pulumi:pulumi:Stack","custom":false}]}}}`
	cases := []struct {
		name      string
		files     map[string]string // under .pulumi/
		backend   string            // default: file://<dir>
		ok        bool
		resources int
		err       string
	}{
		{name: "project layout", files: map[string]string{"meta.yaml": "version: 1\n", "stacks/rack/lab.json": state}, ok: true, resources: 1},
		{name: "new stack", files: map[string]string{"meta.yaml": "version: 1\n"}, ok: true},
		{name: "gzip state", files: map[string]string{"meta.yaml": "version: 1\n", "stacks/rack/lab.json.gz": "x"}},
		{name: "legacy layout", files: map[string]string{"stacks/lab.json": state}},
		{name: "another meta version", files: map[string]string{"meta.yaml": "version: 2\n", "stacks/rack/lab.json": state}},
		{name: "another backend", backend: "s3://bucket"},
		{name: "older checkpoint", files: map[string]string{"meta.yaml": "version: 1\n", "stacks/rack/lab.json": `{"version":2,"checkpoint":{}}`}},
		{name: "broken state", files: map[string]string{"meta.yaml": "version: 1\n", "stacks/rack/lab.json": `{"version":3,`}, ok: true, err: "lab.json is not valid JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range c.files {
				path := filepath.Join(dir, ".pulumi", filepath.FromSlash(name))
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			backend := c.backend
			if backend == "" {
				backend = "file://" + filepath.ToSlash(dir)
			}
			d, ok, err := readCheckpoint(backend, Project, "lab")
			if ok != c.ok {
				t.Fatalf("ok = %v, want %v (err %v)", ok, c.ok, err)
			}
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want one saying %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok && len(d.Resources) != c.resources {
				t.Errorf("%d resources, want %d", len(d.Resources), c.resources)
			}
		})
	}
}
