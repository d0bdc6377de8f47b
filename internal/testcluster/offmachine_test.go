package testcluster

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/homelab/rack/internal/testnet"
)

// TestWebhookCallStaysOnMachine is the failure that once sent a packet off
// this machine: the API server calls a validating webhook through a Service's
// cluster IP (MetalLB's and Longhorn's charts install such webhooks). While a
// test cluster runs, that call must fail here, at once, on the blackhole
// route, and never wait for an answer from elsewhere.
func TestWebhookCallStaysOnMachine(t *testing.T) {
	t.Parallel()
	c := New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := testnet.Check(ctx, ""); err != nil {
		t.Fatalf("while the control plane runs: %v", err)
	}
	// The API server's own Service and addresses at the top of both
	// networks (the bottom pod /24s may be routed into the test rack by a
	// real-pods test running beside this one).
	for _, addr := range append([]string{ServiceIP + ":443"}, testnet.ProbeAddrs...) {
		if err := testnet.DialFailsLocally(addr); err != nil {
			t.Error(err)
		}
	}

	cs := c.Clientset()
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "webhook"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(9443)}},
			Selector: map[string]string{"app": "nothing"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fail := admissionv1.Fail
	none := admissionv1.SideEffectClassNone
	path := "/validate"
	_, err = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "offmachine"},
		Webhooks: []admissionv1.ValidatingWebhook{{
			Name:                    "configmaps.offmachine.test",
			ClientConfig:            admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Namespace: "default", Name: "webhook", Path: &path}},
			Rules:                   []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create}, Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "default"}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The API server may take a moment to see the new configuration.
	var last error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"}}, metav1.CreateOptions{})
		took := time.Since(start)
		if err == nil {
			last = nil
			time.Sleep(200 * time.Millisecond)
			continue
		}
		last = err
		msg := err.Error()
		if !strings.Contains(msg, "failed calling webhook") {
			t.Fatalf("create: %v", err)
		}
		if !strings.Contains(msg, svc.Spec.ClusterIP) || !(strings.Contains(msg, "invalid argument") || strings.Contains(msg, "network is unreachable")) {
			t.Fatalf("the webhook call did not fail on the blackhole route: %v", err)
		}
		if took > 5*time.Second {
			t.Fatalf("the webhook call took %v to fail: it waited for something off the machine", took)
		}
		t.Logf("refused locally in %v: %v", took.Round(time.Millisecond), err)
		return
	}
	t.Fatalf("the webhook was never called (last: %v)", last)
}
