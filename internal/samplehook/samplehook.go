// Package samplehook proves an API server reaches an admission webhook served
// by a pod: it registers rack's sample web server (internal/sampleweb), running
// behind a Service with a serving certificate, as a validating webhook, and
// checks a ConfigMap the server refuses is refused with its message while
// another is admitted. The real-pods tests of the node runtime and of the
// node layer both use it.
package samplehook

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/homelab/rack/internal/testenv"
)

// DenyLabel makes the sample web server's /validate refuse an object.
const DenyLabel = "sampleweb.homelab/deny"

// selector limits the webhook to the test's own ConfigMaps, so the rest of
// the cluster keeps working while it is registered.
var selector = map[string]string{"webhook-test": "yes"}

// Refuses registers the webhook served at https://<service>.default.svc/validate
// (a certificate signed by caPEM) and fails the test unless the API server
// calls it within a minute. The registration is removed when it returns.
func Refuses(t testing.TB, ctx context.Context, cs kubernetes.Interface, service string, caPEM []byte) {
	t.Helper()
	fail, none := admissionv1.Fail, admissionv1.SideEffectClassNone
	path, timeout := "/validate", int32(5)
	hooks := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if _, err := hooks.Create(ctx, &admissionv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "sampleweb"},
		Webhooks: []admissionv1.ValidatingWebhook{{
			Name: "deny.sampleweb.homelab",
			ClientConfig: admissionv1.WebhookClientConfig{
				Service:  &admissionv1.ServiceReference{Namespace: "default", Name: service, Path: &path},
				CABundle: caPEM,
			},
			Rules: []admissionv1.RuleWithOperations{{
				Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
			}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: selector},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          &timeout,
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hooks.Delete(context.Background(), "sampleweb", metav1.DeleteOptions{}) }()

	cms := cs.CoreV1().ConfigMaps("default")
	cm := func(name string, deny bool) *corev1.ConfigMap {
		labels := maps.Clone(selector)
		if deny {
			labels[DenyLabel] = "true"
		}
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	// The API server picks a new configuration up within a second or so;
	// until then the ConfigMap is admitted (and removed for the next try).
	testenv.WaitFor(t, testenv.Within(t, time.Minute), "the webhook pod's refusal of a ConfigMap labelled "+DenyLabel, func() (bool, string) {
		_, err := cms.Create(ctx, cm("refused", true), metav1.CreateOptions{})
		if err == nil {
			_ = cms.Delete(ctx, "refused", metav1.DeleteOptions{})
			return false, "admitted"
		}
		return strings.Contains(err.Error(), "refuses refused"), err.Error()
	})
	if _, err := cms.Create(ctx, cm("allowed", false), metav1.CreateOptions{}); err != nil {
		t.Errorf("a ConfigMap the webhook allows: %v", err)
	}
}
