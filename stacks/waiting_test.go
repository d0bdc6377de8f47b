package stacks

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/homelab/rack/internal/testcluster"
)

// The provider's error for a release that timed out, as pulumi up
// printed it on the test rack.
const helmTimeoutErr = `pulumi up of stack plat: failed to run update: exit status 1
  kubernetes:helm.sh/v3:Release (argocd):
    error: 1 error occurred:
    	* Helm release "waiting/argocd" was created, but failed to initialize completely. Use Helm CLI to investigate: failed to become available within allocated timeout. Error: Helm Release waiting/argocd: context deadline exceeded`

func TestHelmTimedOutNamesTheNamespace(t *testing.T) {
	for _, c := range []struct{ msg, ns string }{
		{helmTimeoutErr, "waiting"},
		{`Error: Helm Release metallb-system/metallb: context deadline exceeded`, "metallb-system"},
		{`Helm release "longhorn-system/longhorn" was created but failed to initialize completely`, "longhorn-system"},
		{`failed calling webhook "ipaddresspoolvalidationwebhook.metallb.io"`, ""},
		{`context deadline exceeded`, ""},
	} {
		m := helmTimedOut.FindStringSubmatch(c.msg)
		got := ""
		if m != nil {
			got = m[1] + m[2]
		}
		if got != c.ns {
			t.Errorf("%q: namespace %q, want %q", c.msg, got, c.ns)
		}
	}
}

// TestWhatItWaitedFor: a release that timed out says, from the real API
// server, which workload was short of pods and why.
func TestWhatItWaitedFor(t *testing.T) {
	c := testcluster.New(t)
	cs := c.Clientset()
	kubeconfig, err := os.ReadFile(c.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "waiting"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A Deployment whose pod no node can take, as one pinned to a node
	// that left the rack.
	labels := map[string]string{"app": "argocd-server"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "argocd-server"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": "gone"},
					Containers:   []corev1.Container{{Name: "server", Image: "quay.io/argoproj/argocd:v3"}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("waiting").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The scheduler has had its say once the pod is marked unschedulable.
	var schedulerSaid string
	for {
		pods, err := cs.CoreV1().Pods("waiting").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 1 {
			for _, c := range pods.Items[0].Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
					schedulerSaid = c.Message
				}
			}
		}
		if schedulerSaid != "" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the pod was never found unschedulable: %v", pods.Items)
		}
		time.Sleep(200 * time.Millisecond)
	}

	cause := errors.New(helmTimeoutErr)
	err = whatItWaitedFor(ctx, cause, kubeconfig)
	t.Logf("the error:\n%v", err)
	if !errors.Is(err, cause) {
		t.Errorf("the engine's error is lost: %v", err)
	}
	for _, want := range []string{
		"context deadline exceeded",
		"not ready in namespace waiting (kubectl -n waiting get pods tells more):",
		"Deployment argocd-server: 0 of 1 ready",
		"pod argocd-server-",
		"Pending, not scheduled: " + schedulerSaid,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}

	// Anything else, or no cluster to ask, stays as it was.
	other := errors.New("pulumi up of stack plat: the stack is currently locked")
	if got := whatItWaitedFor(ctx, other, kubeconfig); got != other {
		t.Errorf("another error changed: %v", got)
	}
	if got := whatItWaitedFor(ctx, cause, nil); got != cause {
		t.Errorf("without a kubeconfig: %v", got)
	}
	// A namespace where everything is ready adds nothing.
	if got := whatItWaitedFor(ctx, errors.New(`Helm Release kube-public/x: context deadline exceeded`), kubeconfig); strings.Contains(got.Error(), "not ready") {
		t.Errorf("an empty namespace: %v", got)
	}
}
