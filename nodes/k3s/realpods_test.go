package k3s_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/homelab/rack/internal/testpki"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/util/podutils"

	"github.com/homelab/rack/internal/fakek3s"
	"github.com/homelab/rack/internal/samplehook"
	"github.com/homelab/rack/internal/testlab"
	"github.com/homelab/rack/nodes/kube"
)

// TestRealPods: rack installs k3s on hosts that run real kubelets,
// containerd and kube-proxy; then a Deployment of the project's sample web
// server really runs, its probes really probe, its Service answers from
// every node through kube-proxy, and a pod on one node reaches a pod on
// another over the pod network.
func TestRealPods(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{Nodes: []testlab.Node{
		{Name: "server", Role: "server", Real: true},
		{Name: "agent-a", Role: "agent", Real: true},
		{Name: "agent-b", Role: "agent", Real: true},
	}})
	if _, _, err := up(t, lab); err != nil {
		t.Fatalf("rack up: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := lab.Clientset()
	for name, n := range nodeList(t, lab) {
		if !kube.NodeReady(&n) || n.Labels["testrack.homelab/kubelet"] != "real" || n.Status.NodeInfo.KubeletVersion != fakek3s.DefaultVersion ||
			!strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "containerd://") {
			t.Fatalf("%s: ready=%v labels=%v kubelet=%s runtime=%s", name, kube.NodeReady(&n), n.Labels,
				n.Status.NodeInfo.KubeletVersion, n.Status.NodeInfo.ContainerRuntimeVersion)
		}
	}

	web := sampleWeb("web", 2, nil)
	// The pods go to the agents: the server's node is free to probe from.
	web.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "agent-a"}
	web.Spec.Template.Spec.Affinity = nil
	mustCreate(t, ctx, cs, web)
	other := sampleWeb("other", 1, nil)
	other.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "agent-b"}
	mustCreate(t, ctx, cs, other)
	never := sampleWeb("never", 1, map[string]string{"SAMPLEWEB_NEVER_READY": "1"})
	mustCreate(t, ctx, cs, never)
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitPods(t, ctx, cs, "app=web", 2, true)
	otherPods := waitPods(t, ctx, cs, "app=other", 1, true)

	// Probes really probe: the never-ready pod runs but is not Ready.
	nv := waitPods(t, ctx, cs, "app=never", 1, false)
	time.Sleep(3 * time.Second)
	if p, _ := cs.CoreV1().Pods("default").Get(ctx, nv[0].Name, metav1.GetOptions{}); podutils.IsPodReady(p) || p.Status.Phase != corev1.PodRunning {
		t.Errorf("the never-ready pod: phase %s, ready %v", p.Status.Phase, podutils.IsPodReady(p))
	}

	// The Service from the server's node, which runs none of its pods: kube-proxy.
	hosts := map[string]int{}
	for i := 0; i < 20; i++ {
		out, err := lab.Host("server").Exec(ctx, "curl -sS --max-time 5 http://"+svc.Spec.ClusterIP+"/")
		if err != nil {
			t.Fatalf("the Service from the server: %v %s", err, out)
		}
		var answer struct{ App, Version, Host string }
		if err := json.Unmarshal(out, &answer); err != nil || answer.Version != "v1" {
			t.Fatalf("the Service answered %q (%v)", out, err)
		}
		hosts[answer.Host]++
	}
	if len(hosts) != 2 {
		t.Errorf("20 requests through the Service reached %d pods, want both: %v", len(hosts), hosts)
	}
	// The API server (on a real node: through its own kube-proxy) calls a
	// webhook served by a pod.
	webhookRefuses(t, ctx, lab, "agent-b")
	// Pod to pod across nodes: a web pod on agent-a fetches the pod on agent-b.
	out, err := lab.Host("server").Exec(ctx, fmt.Sprintf("curl -sS --max-time 10 'http://%s/fetch?url=http://%s:8080/'", svc.Spec.ClusterIP, otherPods[0].Status.PodIP))
	if err != nil || !strings.Contains(string(out), `"status":200`) || !strings.Contains(string(out), otherPods[0].Name) {
		t.Errorf("pod on agent-a to pod on agent-b (%s): %s %v", otherPods[0].Status.PodIP, out, err)
	}
}

func sampleWeb(name string, replicas int32, env map[string]string) *appsv1.Deployment {
	var envs []corev1.EnvVar
	for k, v := range env {
		envs = append(envs, corev1.EnvVar{Name: k, Value: v})
	}
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: "docker.io/homelab/sampleweb:v1", ImagePullPolicy: corev1.PullIfNotPresent, Env: envs,
					Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
					LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 2},
				}}},
			},
		},
	}
}

func mustCreate(t *testing.T, ctx context.Context, cs kubernetes.Interface, d *appsv1.Deployment) {
	t.Helper()
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPods waits for n Running pods matching selector (and Ready, if ready).
func waitPods(t *testing.T, ctx context.Context, cs kubernetes.Interface, selector string, n int, ready bool) []corev1.Pod {
	t.Helper()
	var last string
	for {
		list, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil {
			var ok []corev1.Pod
			var states []string
			for _, p := range list.Items {
				states = append(states, fmt.Sprintf("%s %s ready=%v", p.Name, p.Status.Phase, podutils.IsPodReady(&p)))
				if p.Status.Phase == corev1.PodRunning && (!ready || podutils.IsPodReady(&p)) {
					ok = append(ok, p)
				}
			}
			if len(ok) >= n {
				return ok
			}
			last = strings.Join(states, "; ")
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pods %s: %s", selector, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// TestWebhookFromAServerWithoutPods: the API server of a server that is not a
// real node (no kube-proxy of its own) still reaches an admission webhook
// served by a pod on a real agent, as MetalLB's and Longhorn's are; and the
// service network is still never routed off the machine.
func TestWebhookFromAServerWithoutPods(t *testing.T) {
	t.Parallel()
	lab := testlab.New(t, testlab.Spec{Nodes: []testlab.Node{
		{Name: "server", Role: "server"},
		{Name: "agent", Role: "agent", Real: true},
	}})
	if _, _, err := up(t, lab); err != nil {
		t.Fatalf("rack up: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	webhookRefuses(t, ctx, lab, "agent")
}

// webhookRefuses deploys the sample web server as a validating webhook on
// node and proves the API server calls it: a ConfigMap it refuses is refused
// with its message, another is admitted.
func webhookRefuses(t *testing.T, ctx context.Context, lab *testlab.Lab, node string) {
	t.Helper()
	cs := lab.Clientset()
	ca, err := testpki.ParseCA([]byte(lab.CP.CAPEM), []byte(lab.CP.CAKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.Issue(testpki.Spec{CN: "hook.default.svc", DNS: []string{"hook.default.svc"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": serving.CertPEM, "tls.key": serving.KeyPEM}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hook := sampleWeb("hook", 1, map[string]string{"SAMPLEWEB_TLS_LISTEN": ":8443", "SAMPLEWEB_TLS_CERT": "/tls/tls.crt", "SAMPLEWEB_TLS_KEY": "/tls/tls.key"})
	p := &hook.Spec.Template.Spec
	p.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	p.Volumes = []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "hook-tls"}}}}
	p.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", ReadOnly: true}}
	mustCreate(t, ctx, cs, hook)
	waitPods(t, ctx, cs, "app=hook", 1, true)
	if _, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hook"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "hook"}, Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(8443)}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	samplehook.Refuses(t, ctx, cs, "hook", []byte(lab.CP.CAPEM))
}
