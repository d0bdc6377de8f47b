package noderuntime_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/homelab/rack/internal/noderuntime"
	"github.com/homelab/rack/internal/samplehook"
	"github.com/homelab/rack/internal/testpki"
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

	ca, err := testpki.NewCA("sampleweb-webhook-ca")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.Issue(testpki.Spec{CN: "hook.default.svc", DNS: []string{"hook.default.svc"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, certPEM, keyPEM := ca.CertPEM, serving.CertPEM, serving.KeyPEM
	_, err = cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
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

	samplehook.Refuses(t, ctx, cs, "hook", caPEM)
	t.Logf("refused by the webhook pod %s on %s (%s)", hook.Name, hook.Spec.NodeName, hook.Status.PodIP)
	out, err := l.get(ctx, l.nodes[1], "http://"+hook.Status.PodIP+":8080/stats")
	t.Logf("webhook pod stats: %s %v", strings.TrimSpace(out), err)
}
