package stacks

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab/rack/internal/testenv"

	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes"
	corev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/core/v1"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// TestKubernetesPluginBuilt: with the provider plugin scripts/build-provider.sh
// builds, rack's own check (the plugin cache read as `pulumi plugin ls` does) passes, both where the
// script installs it and after the `pulumi plugin install … -f FILE` that
// rack's advice gives airgapped users; and the engine runs it.
func TestKubernetesPluginBuilt(t *testing.T) {
	home := pulumiWithKubernetes(t)
	ctx := context.Background()
	// Check and the engine ignore a binary on PATH (TestPluginVersionExactly);
	// one there would only muddle what this test shows.
	if p, err := exec.LookPath("pulumi-resource-kubernetes"); err == nil {
		t.Fatalf("pulumi-resource-kubernetes is on PATH at %s", p)
	}
	bin := filepath.Join(home, "plugins", "resource-kubernetes-v"+KubernetesPluginVersion, "pulumi-resource-kubernetes")

	t.Run("installed by the script", func(t *testing.T) {
		if err := Check(ctx, Options{PulumiHome: home}); err != nil {
			t.Fatalf("Check with the plugin in %s: %v", home, err)
		}
	})

	t.Run("pulumi plugin install -f", func(t *testing.T) {
		fresh := t.TempDir()
		if Check(ctx, Options{PulumiHome: fresh}) == nil {
			t.Fatal("Check passed with an empty PULUMI_HOME")
		}
		install := exec.Command("pulumi", "plugin", "install", "resource", "kubernetes", "v"+KubernetesPluginVersion, "-f", bin)
		install.Env = append(os.Environ(), "PULUMI_HOME="+fresh, "PULUMI_SKIP_UPDATE_CHECK=true")
		if out, err := install.CombinedOutput(); err != nil {
			t.Fatalf("pulumi plugin install: %v\n%s", err, out)
		}
		if err := Check(ctx, Options{PulumiHome: fresh}); err != nil {
			t.Fatalf("Check after pulumi plugin install: %v", err)
		}
	})

	t.Run("engine preview", func(t *testing.T) {
		// The engine starts the plugin for rack's SDK and plans through it;
		// no cluster is needed to plan a create (one that cannot be reached).
		t.Setenv(EnvPassphrase, "test-passphrase")
		const kubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: unused}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
		r := &run{stateDir: filepath.Join(t.TempDir(), "state"), stack: "lab", needsKubernetes: true, program: func(ctx *pulumi.Context) error {
			k8s, err := kubernetes.NewProvider(ctx, "rack", &kubernetes.ProviderArgs{Kubeconfig: pulumi.String(kubeconfig)})
			if err != nil {
				return err
			}
			_, err = corev1.NewNamespace(ctx, "ns", &corev1.NamespaceArgs{
				Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String("rack-provider-test")},
			}, pulumi.Provider(k8s))
			return err
		}}
		var progress testenv.Buffer
		res, err := r.preview(ctx, Options{PulumiHome: home, Progress: &progress})
		if err != nil {
			t.Fatalf("preview: %v\n%s", err, progress.String())
		}
		if res.Changes["create"] != 3 || !strings.Contains(progress.String(), "kubernetes:core/v1:Namespace") {
			t.Errorf("changes %v, want the stack, the provider and the Namespace created:\n%s", res.Changes, progress.String())
		}
		// The plugin says which source it was built from; the engine warns
		// when that is older than the folder it was installed under.
		for line := range strings.Lines(progress.String()) {
			if strings.Contains(line, "resource plugin kubernetes is expected") {
				t.Logf("engine: %s", strings.TrimSpace(line))
				break
			}
		}
	})
}
