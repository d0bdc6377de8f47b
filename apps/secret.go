package apps

import (
	"fmt"
	"sort"

	"github.com/homelab/rack/inventory"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// WaveConfig is the wave of the Secret the Deployments read: before them,
// so no pod starts without its settings.
const WaveConfig = -1

// SecretPlaceholder stands for every secret value in a rendered Secret. The
// deliverer replaces it: the Pulumi apps stack with the value as a Pulumi
// secret; `rack render` leaves it, in a file Argo CD does not apply, for the
// user to seal.
const SecretPlaceholder = "REPLACE-ME: seal this secret"

// SecretName is the Secret holding an app's secret env values.
func SecretName(app string) string { return app + "-env" }

// IsSecret reports whether obj is an app's env Secret, whose values Render
// leaves as SecretPlaceholder.
func IsSecret(obj *unstructured.Unstructured) bool {
	return obj.GetKind() == "Secret" && obj.GetAPIVersion() == "v1"
}

// envSecret is the Secret <app>-env with a placeholder per secret env key.
func (b *builder) envSecret() *unstructured.Unstructured {
	keys := make([]string, 0, len(b.secret))
	for k := range b.secret {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	data := map[string]string{}
	for _, k := range keys {
		data[k] = SecretPlaceholder
	}
	s := corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: b.meta(SecretName(b.app.Name), "", ""),
		Type:       corev1.SecretTypeOpaque,
		StringData: data,
	}
	s.Annotations = map[string]string{AnnotationSyncWave: fmt.Sprint(WaveConfig)}
	return toObject(s)
}

// checkSecretEnv refuses secret keys the app's env does not have.
func checkSecretEnv(app inventory.App, keys []string) error {
	for _, k := range keys {
		if _, ok := app.Env[k]; !ok {
			return problem(app, "env."+k, "is named a secret, but the app has no such env key: the inventory and the renderer's options disagree")
		}
	}
	return nil
}
