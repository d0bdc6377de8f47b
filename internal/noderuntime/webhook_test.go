package noderuntime_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/homelab/rack/internal/noderuntime"
	"github.com/homelab/rack/internal/testrack"
)

// testWebhook serves a validating webhook from a sampleweb pod behind a
// Service and checks the API server (in the root namespace) calls it: with
// --enable-aggregator-routing it dials the endpoint's pod address, which
// the root namespace routes to the pod's node like flannel's host-gw does.
func testWebhook(t *testing.T, ctx context.Context, l *lab) {
	cs := l.cs
	// Routes in the root namespace to every node's pod CIDR, more specific
	// than the test network's blackhole for the pod CIDR, kept by the same
	// route sync the nodes run.
	routes := noderuntime.PodRoutes{
		Client: noderuntime.Admin{URL: l.cluster.URL, CAPEM: l.cluster.CAPEM, CertPEM: l.cluster.AdminCertPEM, KeyPEM: l.cluster.AdminKeyPEM},
		Dev:    testrack.BridgeName, Logf: t.Logf,
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = routes.Run(rctx); close(done) }()
	var cidrs []string
	for _, n := range l.nodes {
		nd, err := cs.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cidrs = append(cidrs, nd.Spec.PodCIDR)
	}
	t.Cleanup(func() {
		stop()
		<-done
		// Only this cluster's routes: the root namespace is shared.
		for _, c := range cidrs {
			_ = exec.Command("ip", "route", "del", c, "proto", "77").Run()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := exec.Command("ip", "route", "show", "proto", "77").CombinedOutput()
		missing := 0
		for _, c := range cidrs {
			if !strings.Contains(string(out), c+" via") {
				missing++
			}
		}
		if missing == 0 {
			t.Logf("root namespace routes:\n%s", strings.TrimSpace(string(out)))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod routes in the root namespace: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	caPEM, certPEM, keyPEM := servingCert(t, "hook.default.svc")
	_, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "hook-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deploySampleWeb(t, ctx, cs, "hook", 1, []string{l.nodes[1].name}, []corev1.EnvVar{
		{Name: "SAMPLEWEB_TLS_LISTEN", Value: ":8443"},
		{Name: "SAMPLEWEB_TLS_CERT", Value: "/tls/tls.crt"},
		{Name: "SAMPLEWEB_TLS_KEY", Value: "/tls/tls.key"},
	}, func(d *appsv1.Deployment) {
		p := &d.Spec.Template.Spec
		p.Volumes = []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "hook-tls"}}}}
		p.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", ReadOnly: true}}
	})
	hook := waitPodsReady(t, ctx, cs, "app=hook", 1)[0]
	createService(t, ctx, cs, "hook", corev1.ServicePort{Port: 443, TargetPort: intstr.FromInt32(8443)})

	fail, none := admissionv1.Fail, admissionv1.SideEffectClassNone
	path, timeout := "/validate", int32(5)
	_, err = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "sampleweb"},
		Webhooks: []admissionv1.ValidatingWebhook{{
			Name: "deny.sampleweb.homelab",
			ClientConfig: admissionv1.WebhookClientConfig{
				Service:  &admissionv1.ServiceReference{Namespace: "default", Name: "hook", Path: &path},
				CABundle: caPEM,
			},
			Rules: []admissionv1.RuleWithOperations{{
				Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
			}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"webhook-test": "yes"}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          &timeout,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm := func(name string, deny bool) *corev1.ConfigMap {
		labels := map[string]string{"webhook-test": "yes"}
		if deny {
			labels["sampleweb.homelab/deny"] = "true"
		}
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	// The API server picks the configuration up within a second or so.
	var last error
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, last = cs.CoreV1().ConfigMaps("default").Create(ctx, cm("refused", true), metav1.CreateOptions{})
		if last != nil && strings.Contains(last.Error(), "refuses refused") {
			break
		}
		if last == nil {
			_ = cs.CoreV1().ConfigMaps("default").Delete(ctx, "refused", metav1.DeleteOptions{})
		}
		time.Sleep(500 * time.Millisecond)
	}
	if last == nil || !strings.Contains(last.Error(), "refuses refused") {
		t.Fatalf("a ConfigMap the webhook refuses: err %v, want the webhook's refusal", last)
	}
	t.Logf("refused by the webhook pod %s on %s (%s): %v", hook.Name, hook.Spec.NodeName, hook.Status.PodIP, last)
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm("allowed", false), metav1.CreateOptions{}); err != nil {
		t.Errorf("a ConfigMap the webhook allows: %v", err)
	}
	out, err := l.get(ctx, l.nodes[1], "http://"+hook.Status.PodIP+":8080/stats")
	t.Logf("webhook pod stats: %s %v", strings.TrimSpace(out), err)
	_ = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, "sampleweb", metav1.DeleteOptions{})
}

// servingCert makes a CA and a serving certificate for dnsName.
func servingCert(t *testing.T, dnsName string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sampleweb-webhook-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
