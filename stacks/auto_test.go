package stacks

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testenv"

	corev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/core/v1"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"

	"github.com/homelab/rack/internal/testcluster"
	"github.com/homelab/rack/inventory"
)

// pulumiCLI builds (or takes from the cache) the pulumi CLI with
// scripts/build-pulumi.sh and puts it first on PATH, with an empty
// PULUMI_HOME: no plugins, in particular no kubernetes plugin.
func pulumiCLI(t testing.TB) (pulumiHome string) {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		testenv.SkipOrFail(t, "the Automation API tests build the pulumi CLI (~10 min cold) and run as root on CI (uid %d)", uid)
	}
	dir := buildTool(t, "build-pulumi.sh")
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	home := t.TempDir()
	t.Setenv("PULUMI_HOME", home)
	return home
}

// pulumiWithKubernetes is pulumiCLI plus the kubernetes provider plugin that
// scripts/build-provider.sh builds, installed in the test's own PULUMI_HOME
// under KubernetesPluginVersion. A link to the cached binary, not the cached
// home itself: the engine writes into PULUMI_HOME, and tests must not share it.
func pulumiWithKubernetes(t testing.TB) (pulumiHome string) {
	t.Helper()
	home := pulumiCLI(t)
	built := buildTool(t, "build-provider.sh")
	name := "resource-kubernetes-v" + KubernetesPluginVersion
	bin := filepath.Join(built, "plugins", name, "pulumi-resource-kubernetes")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("scripts/build-provider.sh installed no plugin %s (does the sdk/v4 line of go.mod say v%s?): %v", name, KubernetesPluginVersion, err)
	}
	dir := filepath.Join(home, "plugins", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(dir, "pulumi-resource-kubernetes")); err != nil {
		t.Fatal(err)
	}
	return home
}

// buildTool runs scripts/<script> (which builds once, then answers from its
// cache) and returns the last line it prints.
func buildTool(t testing.TB, script string) string {
	t.Helper()
	root, err := testcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(filepath.Join(root, "scripts", script))
	cmd.Stderr = os.Stderr // "== building …" explains a long first run
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/%s: %v", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	t.Logf("scripts/%s: %s (%v)", script, last, time.Since(start).Round(time.Millisecond))
	return last
}

// TestUpOffline proves the wiring with a real engine: an inline program
// without kubernetes resources (the plugin is not to be had here) goes
// through the file backend with the passphrase provider.
func TestUpOffline(t *testing.T) {
	home := pulumiCLI(t)
	t.Setenv(EnvPassphrase, "")
	ctx := context.Background()
	stateDir := filepath.Join(t.TempDir(), ".rack", "lab")

	const token = "k3s-token-9f1c2e7d5b3a"
	generated := "" // a secret the program makes up itself
	r := &run{stateDir: stateDir, stack: "lab", program: func(ctx *pulumi.Context) error {
		ctx.Export("token", config.RequireSecret(ctx, "token"))
		ctx.Export(OutputArgoCDAddress, pulumi.String("https://192.0.2.10"))
		ctx.Export("password", pulumi.ToSecret(pulumi.String(generated)))
		return nil
	}}
	generated = "pw-" + rand.Text()

	// A config secret the way a user would set it: on stdin, never argv.
	// The stack is created first through the workspace (rack's own path).
	var progress testenv.Buffer
	opts := Options{Progress: &progress, PulumiHome: home}
	if _, err := r.open(ctx, opts); err != nil {
		t.Fatal(err)
	}
	pass, err := passphrase(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	set := exec.Command("pulumi", "config", "set", "--secret", "--stack", "lab", "token")
	set.Dir = filepath.Join(stateDir, workSubdir)
	set.Stdin = strings.NewReader(token)
	set.Env = append(os.Environ(), "PULUMI_CONFIG_PASSPHRASE="+pass,
		"PULUMI_BACKEND_URL=file://"+filepath.Join(stateDir, stateSubdir), "PULUMI_SKIP_UPDATE_CHECK=true")
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("pulumi config set: %v\n%s", err, out)
	}

	start := time.Now()
	res, err := r.up(ctx, opts)
	if err != nil {
		t.Fatalf("up: %v\nprogress:\n%s", err, progress.String())
	}
	t.Logf("first up: %v, changes %v", time.Since(start).Round(time.Millisecond), res.Changes)

	if res.Outputs["token"] != "[secret]" || res.Outputs["password"] != "[secret]" {
		t.Errorf("secret outputs came back as %v / %v", res.Outputs["token"], res.Outputs["password"])
	}
	if res.Outputs[OutputArgoCDAddress] != "https://192.0.2.10" {
		t.Errorf("outputs %v", res.Outputs)
	}
	if res.Changes["create"] != 1 {
		t.Errorf("changes %v, want the stack created", res.Changes)
	}
	if p := progress.String(); !strings.Contains(p, "Updating (lab)") || !strings.Contains(p, "pulumi:pulumi:Stack") {
		t.Errorf("progress was not streamed; got:\n%s", p)
	}

	// The state is in the file backend under the state dir.
	stateFile := filepath.Join(stateDir, stateSubdir, ".pulumi", "stacks", Project, "lab.json")
	state, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatalf("no state in the file backend: %v", err)
	}
	if !strings.Contains(string(state), `"secrets_providers"`) || !strings.Contains(string(state), "ciphertext") {
		t.Errorf("%s holds no encrypted secrets", stateFile)
	}

	// Neither the passphrase nor a secret appears in plain text anywhere
	// Pulumi wrote (the passphrase file itself aside).
	checkNoPlaintext(t, stateDir, map[string]string{"passphrase": pass, "config token": token, "generated secret": generated})

	// The passphrase was generated: 32 random bytes, kept 0600.
	info, err := os.Stat(filepath.Join(stateDir, PassphraseFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("passphrase file mode %v, want 0600", info.Mode().Perm())
	}
	if b, err := base64.RawURLEncoding.DecodeString(pass); err != nil || len(b) != 32 {
		t.Errorf("passphrase is not 32 random bytes: %d bytes, %v", len(b), err)
	}

	// A second run reuses the passphrase and changes nothing.
	progress = testenv.Buffer{}
	res, err = r.up(ctx, Options{Progress: &progress, PulumiHome: home})
	if err != nil {
		t.Fatalf("second up: %v\n%s", err, progress.String())
	}
	if res.Changes["same"] != 1 || res.Changes["create"] != 0 {
		t.Errorf("second up changes %v, want nothing but same", res.Changes)
	}

	// rack reads the file backend's checkpoint itself: exactly what
	// `pulumi stack export` prints, secrets still encrypted.
	st, err := r.open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := exportState(ctx, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	viaCLI, err := exportStateCLI(ctx, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(direct)
	b, _ := json.Marshal(viaCLI)
	if len(direct.Resources) == 0 || string(a) != string(b) {
		t.Errorf("the state read from the file backend differs from pulumi stack export:\n%s\n%s", a, b)
	}
	if strings.Contains(string(a), generated) {
		t.Errorf("the state read holds the generated secret in plain text")
	}

	// Another passphrase cannot decrypt the stack, and rack says why.
	t.Setenv(EnvPassphrase, "not-the-one")
	_, err = r.up(ctx, Options{PulumiHome: home})
	if err == nil || !strings.Contains(err.Error(), EnvPassphrase) {
		t.Errorf("up with a wrong passphrase: %v, want advice about %s", err, EnvPassphrase)
	}
}

func checkNoPlaintext(t *testing.T, dir string, secrets map[string]string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == PassphraseFile {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for what, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("the %s appears in plain text in %s", what, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2 {
		t.Fatalf("only %d files under %s: nothing was checked", files, dir)
	}
	t.Logf("%d state and workspace files hold no secret in plain text", files)
}

// TestMissingKubernetesPlugin: without the kubernetes plugin (it cannot be
// had on this machine), Check, Preview and the engine itself fail at once
// and say what to install.
func TestMissingKubernetesPlugin(t *testing.T) {
	home := pulumiCLI(t)
	ctx := context.Background()
	wantAdvice := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("no error without the kubernetes plugin")
		}
		for _, want := range []string{
			"pulumi plugin install resource kubernetes v" + KubernetesPluginVersion,
			"pulumi plugin install resource kubernetes v" + KubernetesPluginVersion + " -f FILE",
			"PULUMI_HOME=" + home,
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not say %q:\n%v", want, err)
			}
		}
	}

	t.Run("Check", func(t *testing.T) {
		start := time.Now()
		err := Check(ctx, Options{PulumiHome: home})
		t.Logf("Check failed after %v", time.Since(start).Round(time.Millisecond))
		var missing *MissingError
		if !errors.As(err, &missing) {
			t.Fatalf("error %v, want a *MissingError", err)
		}
		wantAdvice(t, err)
	})

	t.Run("Preview of the rack", func(t *testing.T) {
		inv, problems, err := inventory.Load("../inventory/rack.yaml")
		if err != nil || problems.HasErrors() {
			t.Fatal(err, problems)
		}
		// A copy whose state dir is a temporary folder.
		inv.File = filepath.Join(t.TempDir(), "rack.yaml")
		kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = Preview(ctx, inv, Options{Kubeconfig: kubeconfig, PulumiHome: home})
		t.Logf("Preview failed after %v", time.Since(start).Round(time.Millisecond))
		wantAdvice(t, err)
		// Nothing was touched: not even a passphrase was generated.
		if _, err := os.Stat(inv.StateDir()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Preview created %s before failing: %v", inv.StateDir(), err)
		}
	})

	t.Run("engine without rack's check", func(t *testing.T) {
		// The engine's own failure, as when the plugin vanishes after Check.
		r := &run{stateDir: filepath.Join(t.TempDir(), "state"), stack: "lab", program: func(ctx *pulumi.Context) error {
			_, err := corev1.NewNamespace(ctx, "ns", &corev1.NamespaceArgs{Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String("x")}})
			return err
		}}
		t.Setenv(EnvPassphrase, "test-passphrase")
		var progress testenv.Buffer
		start := time.Now()
		_, err := r.preview(ctx, Options{PulumiHome: home, Progress: &progress})
		t.Logf("engine preview failed after %v", time.Since(start).Round(time.Millisecond))
		wantAdvice(t, err)
		var missing *MissingError
		if !errors.As(err, &missing) {
			t.Errorf("error %T does not hold a *MissingError", err)
		}
		if !strings.Contains(progress.String(), "no resource plugin 'pulumi-resource-kubernetes'") {
			t.Errorf("the engine's own message did not reach the progress writer:\n%s", progress.String())
		}
	})
}

func TestMissingPulumiCLI(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	start := time.Now()
	err := Check(context.Background(), Options{})
	t.Logf("Check failed after %v", time.Since(start).Round(time.Microsecond))
	var missing *MissingError
	if !errors.As(err, &missing) || missing.What != "the pulumi CLI" {
		t.Fatalf("error %v, want the pulumi CLI missing", err)
	}
	for _, want := range []string{"scripts/build-pulumi.sh", "get.pulumi.com", PulumiVersion} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}

func TestUpNeedsKubeconfig(t *testing.T) {
	inv := &inventory.Inventory{File: filepath.Join(t.TempDir(), "rack.yaml"), Cluster: inventory.Cluster{Name: "lab"}}
	_, err := Up(context.Background(), inv, Options{})
	if err == nil || !strings.Contains(err.Error(), "node phase of `rack up`") || !strings.Contains(err.Error(), filepath.Join(".rack", "lab", "kubeconfig")) {
		t.Fatalf("error %v, want where the kubeconfig should be and who writes it", err)
	}
}

func TestPassphrase(t *testing.T) {
	t.Run("from the environment", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv(EnvPassphrase, "from-env")
		p, err := passphrase(dir)
		if err != nil || p != "from-env" {
			t.Fatalf("passphrase = %q, %v", p, err)
		}
		if _, err := os.Stat(filepath.Join(dir, PassphraseFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Error("a passphrase file was written although the environment gave one")
		}
	})
	t.Run("generated once, kept 0600", func(t *testing.T) {
		t.Setenv(EnvPassphrase, "")
		dir := filepath.Join(t.TempDir(), ".rack", "x")
		p1, err := passphrase(dir)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := base64.RawURLEncoding.DecodeString(p1); err != nil || len(b) != 32 {
			t.Errorf("generated %q: not 32 random bytes", p1)
		}
		path := filepath.Join(dir, PassphraseFile)
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		p2, err := passphrase(dir)
		if err != nil || p2 != p1 {
			t.Fatalf("second call %q, %v; want the kept %q", p2, err, p1)
		}
		if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
			t.Errorf("mode %v after reuse, want 0600", info.Mode().Perm())
		}
		other, _ := passphrase(t.TempDir())
		if other == p1 {
			t.Error("two state dirs got the same passphrase")
		}
	})
	t.Run("empty file is refused", func(t *testing.T) {
		t.Setenv(EnvPassphrase, "")
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, PassphraseFile), []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := passphrase(dir); err == nil || !strings.Contains(err.Error(), "is empty") {
			t.Fatalf("error %v", err)
		}
	})
}

// BenchmarkFailFast measures how fast a missing kubernetes plugin is
// reported, as a ratio to the anchor: one `pulumi version`, the cheapest
// thing the CLI does.
func BenchmarkFailFast(b *testing.B) {
	home := pulumiCLI(b)
	ctx := context.Background()
	anchor := func() {
		if err := exec.Command("pulumi", "version").Run(); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	for range 3 {
		anchor()
	}
	per := time.Since(start) / 3

	b.Run("Check", func(b *testing.B) {
		for b.Loop() {
			if Check(ctx, Options{PulumiHome: home}) == nil {
				b.Fatal("Check passed without the kubernetes plugin")
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(per), "x-pulumi-version")
	})
	b.Run("engine-preview", func(b *testing.B) {
		b.Setenv(EnvPassphrase, "bench")
		r := &run{stateDir: b.TempDir(), stack: "bench", program: func(ctx *pulumi.Context) error {
			_, err := corev1.NewNamespace(ctx, "ns", nil)
			return err
		}}
		for b.Loop() {
			if _, err := r.preview(ctx, Options{PulumiHome: home}); err == nil {
				b.Fatal("preview passed without the kubernetes plugin")
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(per), "x-pulumi-version")
	})
}
