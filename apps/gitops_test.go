package apps_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/inventory"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// mysql is an app with a secret env value, as the inventory expands ${VAR}.
func mysql() inventory.App {
	return inventory.App{
		Name: "mysql", Image: "mysql:8.4", Port: 3306, Replicas: 1,
		Storage:  &inventory.AppStorage{Size: "5Gi", Class: "longhorn", Path: "/var/lib/mysql"},
		Env:      map[string]string{"MYSQL_DATABASE": "ghost", "MYSQL_PASSWORD": "s3cret-from-env"},
		Strategy: inventory.Strategy{Type: inventory.StrategyRecreate},
	}
}

// TestSecretEnv: a secret env value never appears in a rendered object:
// the Deployment reads it from the Secret <app>-env, which Render emits
// with placeholders, in the wave before the Deployments.
func TestSecretEnv(t *testing.T) {
	app := mysql()
	rel, _ := apps.Deploy(app, apps.Release{})
	objs, err := apps.Render(app, rel, apps.Options{SecretEnv: []string{"MYSQL_PASSWORD"}})
	if err != nil {
		t.Fatal(err)
	}
	var secret, deploy *unstructured.Unstructured
	for _, o := range objs {
		data, _ := yaml.Marshal(o.Object)
		if bytes.Contains(data, []byte("s3cret-from-env")) {
			t.Errorf("%s holds the secret value", apps.Key(o))
		}
		switch o.GetKind() {
		case "Secret":
			secret = o
		case "Deployment":
			deploy = o
		}
	}
	if secret == nil || secret.GetName() != "mysql-env" || !apps.IsSecret(secret) {
		t.Fatalf("no Secret mysql-env rendered")
	}
	if apps.Wave(secret) >= apps.Wave(deploy) || objs[0] != secret {
		t.Errorf("the Secret is in wave %d, the Deployment in %d: the Secret must come first", apps.Wave(secret), apps.Wave(deploy))
	}
	data, _, _ := unstructured.NestedStringMap(secret.Object, "stringData")
	if len(data) != 1 || data["MYSQL_PASSWORD"] != apps.SecretPlaceholder {
		t.Errorf("Secret stringData %v, want the placeholder for MYSQL_PASSWORD only", data)
	}
	ctrs, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	env := ctrs[0].(map[string]any)["env"].([]any)
	got := map[string]any{}
	for _, e := range env {
		m := e.(map[string]any)
		got[m["name"].(string)] = m
	}
	if v := got["MYSQL_DATABASE"].(map[string]any)["value"]; v != "ghost" {
		t.Errorf("plain env MYSQL_DATABASE = %v", v)
	}
	ref, _, _ := unstructured.NestedStringMap(got["MYSQL_PASSWORD"].(map[string]any), "valueFrom", "secretKeyRef")
	if ref["name"] != "mysql-env" || ref["key"] != "MYSQL_PASSWORD" {
		t.Errorf("MYSQL_PASSWORD comes from %v, want secretKeyRef mysql-env/MYSQL_PASSWORD", got["MYSQL_PASSWORD"])
	}

	// Without secret env, no Secret (the golden files hold).
	plain, _ := apps.Render(app, rel, apps.Options{})
	for _, o := range plain {
		if o.GetKind() == "Secret" {
			t.Error("a Secret rendered without secret env")
		}
	}
	// A secret key the app does not have is the caller's bug.
	if _, err := apps.Render(app, rel, apps.Options{SecretEnv: []string{"NOPE"}}); err == nil || !strings.Contains(err.Error(), "env.NOPE") {
		t.Errorf("unknown secret key: %v", err)
	}
}

func repo(t *testing.T, argo bool) []apps.File {
	t.Helper()
	web := webApp(inventory.StrategyCanary)
	wrel, _ := apps.Deploy(web, apps.Release{})
	web2 := web
	web2.Image = "web:2"
	wrel, _ = apps.Deploy(web2, wrel)
	db := mysql()
	drel, _ := apps.Deploy(db, apps.Release{})
	opts := apps.RepoOptions{Path: "clusters/homelab/apps"}
	if argo {
		opts.RepoURL, opts.Revision = "https://git.example/homelab-gitops", "main"
	}
	files, err := apps.RenderRepo([]apps.RepoApp{
		{App: web2, Release: wrel},
		{App: db, Release: drel, SecretEnv: []string{"MYSQL_PASSWORD"}},
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestRenderRepo: one file per object under <path>/<app>/, one child
// Application per app under the root app-of-apps folder, the secret as a
// placeholder Argo CD does not apply, which says how to seal it.
func TestRenderRepo(t *testing.T) {
	files := repo(t, true)
	var paths []string
	byPath := map[string][]byte{}
	for _, f := range files {
		paths = append(paths, f.Path)
		byPath[f.Path] = f.Data
		if !bytes.HasPrefix(f.Data, []byte(apps.Header)) {
			t.Errorf("%s does not start with rack's header", f.Path)
		}
		if bytes.Contains(f.Data, []byte("s3cret-from-env")) {
			t.Errorf("%s holds the secret value", f.Path)
		}
	}
	for _, want := range []string{
		"clusters/homelab/apps/web.yaml",
		"clusters/homelab/apps/web/deployment-web-blue.yaml",
		"clusters/homelab/apps/web/deployment-web-green.yaml",
		"clusters/homelab/apps/web/traefikservice-web.yaml",
		"clusters/homelab/apps/web/ingressroute-web.yaml",
		"clusters/homelab/apps/web/ingressroute-web-preview.yaml",
		"clusters/homelab/apps/mysql.yaml",
		"clusters/homelab/apps/mysql/deployment-mysql.yaml",
		"clusters/homelab/apps/mysql/persistentvolumeclaim-mysql-data.yaml",
		"clusters/homelab/apps/mysql/secret-mysql-env.yaml" + apps.ExampleSuffix,
	} {
		if !slices.Contains(paths, want) {
			t.Errorf("no %s in\n%s", want, strings.Join(paths, "\n"))
		}
	}
	if !slices.IsSorted(paths) {
		t.Error("files are not sorted")
	}
	var child map[string]any
	if err := yaml.Unmarshal(byPath["clusters/homelab/apps/web.yaml"], &child); err != nil {
		t.Fatal(err)
	}
	u := unstructured.Unstructured{Object: child}
	src, _, _ := unstructured.NestedStringMap(u.Object, "spec", "source")
	dst, _, _ := unstructured.NestedStringMap(u.Object, "spec", "destination")
	if u.GetKind() != "Application" || u.GetNamespace() != apps.ArgoNamespace || u.GetName() != "web" ||
		src["path"] != "clusters/homelab/apps/web" || src["repoURL"] != "https://git.example/homelab-gitops" || src["targetRevision"] != "main" ||
		dst["namespace"] != apps.DefaultNamespace || !slices.Contains(u.GetFinalizers(), apps.ArgoFinalizer) {
		t.Errorf("child Application:\n%s", byPath["clusters/homelab/apps/web.yaml"])
	}
	seal := string(byPath["clusters/homelab/apps/mysql/secret-mysql-env.yaml"+apps.ExampleSuffix])
	for _, want := range []string{"kubeseal", "--from-literal=MYSQL_PASSWORD=\"$MYSQL_PASSWORD\"", "-n apps", apps.SecretPlaceholder} {
		if !strings.Contains(seal, want) {
			t.Errorf("the placeholder Secret does not say %q:\n%s", want, seal)
		}
	}

	// Without Argo CD: the manifests only.
	for _, f := range repo(t, false) {
		if strings.Count(f.Path, "/") == 3 {
			t.Errorf("%s: an Application without addons.argocd", f.Path)
		}
	}
}

// TestWriteRepo: idempotent; removes only what rack render wrote and no
// longer writes; never touches other files.
func TestWriteRepo(t *testing.T) {
	dir := t.TempDir()
	root := "clusters/homelab/apps"
	files := repo(t, true)
	changed, err := apps.WriteRepo(dir, root, files)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != len(files) {
		t.Errorf("first write changed %d of %d files", len(changed), len(files))
	}
	if changed, _ := apps.WriteRepo(dir, root, files); len(changed) != 0 {
		t.Errorf("writing the same files again changed %v", changed)
	}
	foreign := filepath.Join(dir, root, "web", "sealed-secret.yaml")
	if err := os.WriteFile(foreign, []byte("kind: SealedSecret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	readme := filepath.Join(dir, root, "README.md")
	if err := os.WriteFile(readme, []byte("# apps\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// web released (green only), mysql gone from the inventory.
	web := webApp(inventory.StrategyCanary)
	web.Image = "web:2"
	files, err = apps.RenderRepo([]apps.RepoApp{{App: web, Release: apps.Release{Stable: "web:2", Colour: apps.Green}}},
		apps.RepoOptions{Path: root, RepoURL: "https://git.example/homelab-gitops"})
	if err != nil {
		t.Fatal(err)
	}
	changed, err = apps.WriteRepo(dir, root, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{root + "/web/deployment-web-blue.yaml", root + "/mysql.yaml", root + "/mysql/deployment-mysql.yaml"} {
		if !slices.Contains(changed, gone) {
			t.Errorf("%s not reported removed: %v", gone, changed)
		}
		if _, err := os.Stat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
			t.Errorf("%s still there", gone)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, root, "mysql")); !os.IsNotExist(err) {
		t.Error("the emptied mysql folder is still there")
	}
	for _, keep := range []string{foreign, readme} {
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("a file rack render did not write was removed: %s", keep)
		}
	}
	objs, err := apps.ReadRepoObjects(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != len(files) {
		t.Errorf("read back %d objects, wrote %d files", len(objs), len(files))
	}
}
