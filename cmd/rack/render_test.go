package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/homelab/rack/apps"
	"github.com/homelab/rack/apps/release"
	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/stacks"
)

// gitopsInventory is appInventory with Argo CD delivering the apps, and a
// database whose password comes from the environment.
func gitopsInventory(image string) string {
	return strings.ReplaceAll(appInventory, "IMAGE", image) + `  - name: db
    image: postgres:16
    port: 5432
    storage: {size: 1Gi}
    env: {POSTGRES_USER: homelab, POSTGRES_PASSWORD: "${RACK_TEST_DB_PASSWORD}"}
    strategy: {type: recreate}
`
}

func withArgoCD(inv string) string {
	return strings.Replace(inv, "addons:\n", "addons:\n  argocd: {repo: \"https://git.example/homelab-gitops\", path: clusters/lab, revision: main, deliverApps: true}\n", 1)
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func gitRepo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git on this machine")
	}
	dir := t.TempDir()
	git(t, dir, "init", "-q")
	git(t, dir, "config", "user.name", "rack test")
	git(t, dir, "config", "user.email", "rack@test.invalid")
	return dir
}

// TestRenderCommand: rack render writes every app's objects and one child
// Application per app under the root app-of-apps path; a second run changes
// nothing; secrets never reach the files; --commit commits in a git work
// tree and refuses a folder that is not one.
func TestRenderCommand(t *testing.T) {
	pulumiForApps(t)
	const secret = "render-db-pw-7c1e"
	t.Setenv("RACK_TEST_DB_PASSWORD", secret)
	t.Setenv(stacks.EnvPassphrase, "")
	invFile := writeInventory(t, withArgoCD(gitopsInventory("v1")))

	out := t.TempDir()
	stdout, stderr, code := rack(t, nil, "-i", invFile, "-o", "json", "render", "--out", out)
	if code != exitOK {
		t.Fatalf("render: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var res renderResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("render -o json: %v\n%s", err, stdout)
	}
	for _, want := range []string{
		"clusters/lab/web.yaml", "clusters/lab/db.yaml",
		"clusters/lab/web/deployment-web-blue.yaml", "clusters/lab/web/ingressroute-web.yaml",
		"clusters/lab/db/deployment-db.yaml", "clusters/lab/db/persistentvolumeclaim-db-data.yaml",
		"clusters/lab/db/secret-db-env.yaml" + apps.ExampleSuffix,
	} {
		if _, err := os.Stat(filepath.Join(out, want)); err != nil {
			t.Errorf("no %s: %v", want, err)
		}
	}
	if len(res.Changed) != len(res.Files) || len(res.Secrets) != 1 {
		t.Errorf("first render: %d files, %d changed, secrets %v", len(res.Files), len(res.Changed), res.Secrets)
	}
	if !strings.Contains(stderr, "seal them") {
		t.Errorf("render does not say the Secret must be sealed:\n%s", stderr)
	}
	_ = filepath.Walk(out, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds the database password", p)
			}
		}
		return nil
	})

	stdout, _, code = rack(t, nil, "-i", invFile, "render", "--out", out)
	if code != exitOK || !strings.Contains(stdout, "0 changed") {
		t.Errorf("a second render: exit %d\n%s", code, stdout)
	}
	_, stderr, code = rack(t, nil, "-i", invFile, "render", "--out", out, "--commit")
	if code != exitFailed || !strings.Contains(stderr, "is not a git work tree") {
		t.Errorf("--commit outside a git work tree: exit %d\n%s", code, stderr)
	}

	repo := gitRepo(t)
	stdout, stderr, code = rack(t, nil, "-i", invFile, "render", "--out", repo, "--commit")
	if code != exitOK || !strings.Contains(stdout, "committed") {
		t.Fatalf("render --commit: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if log := git(t, repo, "log", "--format=%s"); log != "rack render: apps of lab" {
		t.Errorf("git log: %q", log)
	}
	stdout, _, code = rack(t, nil, "-i", invFile, "render", "--out", repo, "--commit")
	if code != exitOK || strings.Contains(stdout, "committed") || git(t, repo, "rev-list", "--count", "HEAD") != "1" {
		t.Errorf("render --commit with nothing changed: exit %d\n%s", code, stdout)
	}
}

// TestGitOpsPromote: with deliverApps, rack up records the release states
// and delivers nothing; rack render writes them; Argo CD (played by the
// test: the rendered files applied to the API server) delivers; rack app
// promote --out --commit passes the gates against the cluster, re-renders
// the next step and commits it.
func TestGitOpsPromote(t *testing.T) {
	r := newAppRack(t)
	t.Setenv("RACK_TEST_DB_PASSWORD", "gitops-db-pw")
	write := func(image string) {
		if err := os.WriteFile(r.invFile, []byte(withArgoCD(gitopsInventory(image))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	repo := gitRepo(t)
	render := func(what string) {
		t.Helper()
		if out, errOut, code := rack(t, nil, "-i", r.invFile, "render", "--out", repo, "--commit"); code != exitOK {
			t.Fatalf("%s: render: exit %d\n%s\n%s", what, code, out, errOut)
		}
	}
	// argo applies the rendered app objects (not the Applications, not
	// the placeholder Secret) the way Argo CD would: server-side.
	argo := func() {
		t.Helper()
		objs, err := apps.ReadRepoObjects(repo)
		if err != nil {
			t.Fatal(err)
		}
		force := true
		for _, o := range objs {
			if o.GetKind() == "Application" || apps.IsSecret(o) {
				continue
			}
			gv, _ := schema.ParseGroupVersion(o.GetAPIVersion())
			res := strings.ToLower(o.GetKind()) + "s"
			body, _ := json.Marshal(o.Object)
			if _, err := r.dyn.Resource(gv.WithResource(res)).Namespace(o.GetNamespace()).Patch(context.Background(), o.GetName(),
				types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "argocd", Force: &force}); err != nil {
				t.Fatalf("apply %s: %v", apps.Key(o), err)
			}
		}
	}
	if _, err := r.cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: apps.DefaultNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	write("v1")
	r.up(t, "rack up (Argo CD delivers)")
	if d := r.deployments(t); len(d) != 0 {
		t.Fatalf("the apps stack delivered %v although Argo CD delivers", d)
	}
	render("v1")
	argo()
	write("v2")
	r.up(t, "rack up with v2")
	render("v2")
	argo()
	// A PersistentVolumeClaim without a volume keeps db from ever running
	// here; only web is promoted.

	if _, errOut, code := rack(t, nil, "-i", r.invFile, "app", "promote", "web"); code != exitUsage || !strings.Contains(errOut, "give --out DIR") {
		t.Errorf("promote without --out when Argo CD delivers: exit %d\n%s", code, errOut)
	}
	// Argo CD waits for the candidate to be healthy; so does the test.
	gate := &release.Gate{Client: r.cs}
	inv, _, _ := inventory.Load(r.invFile)
	candidate := release.State{Release: apps.Release{Stable: "docker.io/homelab/sampleweb:v1", Candidate: "docker.io/homelab/sampleweb:v2", Colour: apps.Blue}}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ok, reason := gate.Health(context.Background(), inv.Apps[0], candidate)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web never became healthy: %s", reason)
		}
		time.Sleep(250 * time.Millisecond)
	}
	out, errOut, code := rack(t, nil, "-i", r.invFile, "app", "promote", "web", "--out", repo, "--commit")
	if code != exitOK {
		t.Fatalf("promote: exit %d\n%s\n%s", code, out, errOut)
	}
	ts, err := os.ReadFile(filepath.Join(repo, "clusters/lab/web/traefikservice-web.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ts), "weight: 50") {
		t.Errorf("the re-rendered TraefikService is not at 50%%:\n%s", ts)
	}
	if n := git(t, repo, "rev-list", "--count", "HEAD"); n != "3" {
		t.Errorf("%s commits, want v1, v2 and the promote", n)
	}
	st, _ := r.appStatus(t)
	wantStatus(t, st, map[string]any{"step": 1, "weights": map[string]int{"stable": 50, "candidate": 50}})
}
