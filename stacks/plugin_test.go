package stacks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes"
	corev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/core/v1"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/homelab/rack/internal/testenv"
)

// TestPluginVersionExactly: rack's check and the engine agree on one
// plugin, the exact version the SDK asks for in the plugin cache. A
// pulumi-resource-kubernetes on PATH (version unknown) satisfies neither,
// and another version in the cache is named, not taken.
func TestPluginVersionExactly(t *testing.T) {
	home := pulumiWithKubernetes(t)
	ctx := context.Background()
	built, err := os.Readlink(filepath.Join(home, "plugins", "resource-kubernetes-v"+KubernetesPluginVersion, "pulumi-resource-kubernetes"))
	if err != nil {
		t.Fatal(err)
	}
	// An old provider on PATH that would break any engine run using it.
	bin := t.TempDir()
	platWrite(t, filepath.Join(bin, "pulumi-resource-kubernetes"), []byte("#!/bin/sh\necho 'old provider from PATH' >&2\nexit 3\n"))
	if err := os.Chmod(filepath.Join(bin, "pulumi-resource-kubernetes"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	t.Run("PATH alone is not enough", func(t *testing.T) {
		err := Check(ctx, Options{PulumiHome: t.TempDir()})
		var missing *MissingError
		if !errors.As(err, &missing) || !strings.Contains(err.Error(), "on PATH is not used") {
			t.Fatalf("Check with only a binary on PATH: %v", err)
		}
	})

	t.Run("another version in the cache", func(t *testing.T) {
		other := t.TempDir()
		dir := filepath.Join(other, "plugins", "resource-kubernetes-v4.29.0")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(built, filepath.Join(dir, "pulumi-resource-kubernetes")); err != nil {
			t.Fatal(err)
		}
		err := Check(ctx, Options{PulumiHome: other})
		if err == nil || !strings.Contains(err.Error(), "v"+KubernetesPluginVersion+" is missing: only v4.29.0 is installed") {
			t.Fatalf("Check with v4.29.0 only: %v", err)
		}
	})

	t.Run("the engine loads the cached one, not PATH's", func(t *testing.T) {
		if err := Check(ctx, Options{PulumiHome: home}); err != nil {
			t.Fatal(err)
		}
		t.Setenv(EnvPassphrase, "test-passphrase")
		const kubeconfig = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\nusers: [{name: u, user: {token: unused}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
		r := &run{stateDir: filepath.Join(t.TempDir(), "state"), stack: "lab", needsKubernetes: true, program: func(ctx *pulumi.Context) error {
			k8s, err := kubernetes.NewProvider(ctx, "rack", &kubernetes.ProviderArgs{Kubeconfig: pulumi.String(kubeconfig)})
			if err != nil {
				return err
			}
			_, err = corev1.NewNamespace(ctx, "ns", &corev1.NamespaceArgs{Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String("x")}}, pulumi.Provider(k8s))
			return err
		}}
		var progress testenv.Buffer
		if _, err := r.preview(ctx, Options{PulumiHome: home, Progress: &progress}); err != nil {
			t.Fatalf("preview with an old provider on PATH: %v\n%s", err, progress.String())
		}
		if strings.Contains(progress.String(), "from $PATH") {
			t.Errorf("the engine used the binary on PATH:\n%s", progress.String())
		}
	})
}
