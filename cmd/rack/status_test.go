package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/homelab/rack/internal/testcluster"
)

// TestStatusShowsAddons: rack status reads each addon's Helm release from
// the cluster (the records Helm keeps as Secrets) and counts the ready
// pods of its workloads; JSON keeps the nodes' fields and adds "addons";
// an addon that is not deployed and ready fails the command.
func TestStatusShowsAddons(t *testing.T) {
	t.Parallel() // its own lab; rack runs as a process of its own
	c := testcluster.New(t)
	cs := c.Clientset()
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"kubernetes.io/hostname": "n1", "kubernetes.io/arch": "amd64"}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"metallb-system", "argocd"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// MetalLB: two revisions, the newest deployed; a controller kwok runs.
	helmRecord(t, cs, "metallb-system", "metallb", 1, "superseded", "metallb", "0.16.1")
	helmRecord(t, cs, "metallb-system", "metallb", 2, "deployed", "metallb", "0.16.2")
	deployment(t, cs, "metallb-system", "metallb-controller", 1)
	// Argo CD: an upgrade that failed.
	helmRecord(t, cs, "argocd", "argocd", 1, "superseded", "argo-cd", "10.1.1")
	helmRecord(t, cs, "argocd", "argocd", 2, "failed", "argo-cd", "10.1.1")

	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.CAPEM}
	cfg.AuthInfos["lab"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.AdminCertPEM, ClientKeyData: c.AdminKeyPEM}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "lab"}
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	inv := writeInventory(t, `cluster: {name: lab, k3s: {version: v1.33.5+k3s1}}
ssh: {user: pi}
nodes:
  - {name: n1, address: 10.99.0.1, role: server, storage: {local: [{name: data-1, path: /srv, capacity: 1Gi}]}}
addons:
  metallb: {pools: [{name: lan, addresses: [10.99.1.10-10.99.1.20]}]}
  localPV: {}
  argocd: {repo: "https://git.lan/x.git"}
`)
	args := []string{"-i", inv, "status", "--kubeconfig", kubeconfig}

	// kwok makes the node and the controller's pod ready.
	var out, errOut string
	var code int
	deadline := time.Now().Add(time.Minute)
	var st struct {
		Cluster string           `json:"cluster"`
		Nodes   []map[string]any `json:"nodes"`
		Addons  []map[string]any `json:"addons"`
	}
	for {
		out, errOut, code = rack(t, nil, append(args, "-o", "json")...)
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status JSON: %v\n%s\n%s", err, out, errOut)
		}
		if len(st.Addons) > 0 && st.Addons[0]["ready"] == "1/1" && len(st.Nodes) == 1 && st.Nodes[0]["ready"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the node and MetalLB's controller ready:\n%s", out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if st.Cluster != "lab" {
		t.Errorf("cluster %q", st.Cluster)
	}
	for _, k := range []string{"name", "role", "arch", "version", "ready", "cordoned"} {
		if _, ok := st.Nodes[0][k]; !ok {
			t.Errorf("node lacks %q: %v", k, st.Nodes[0])
		}
	}
	want := []map[string]any{
		{"name": "metallb", "chart": "metallb", "version": "0.16.2", "status": "deployed", "ready": "1/1"},
		{"name": "argocd", "chart": "argo-cd", "version": "10.1.1", "status": "failed", "ready": "0/0"},
		{"name": "localPV", "chart": "", "version": "", "status": "incomplete", "ready": "0/0"},
	}
	if len(st.Addons) != len(want) {
		t.Fatalf("addons %v", st.Addons)
	}
	for i, w := range want {
		for k, v := range w {
			if st.Addons[i][k] != v {
				t.Errorf("addon %d %s = %v, want %v (%v)", i, k, st.Addons[i][k], v, st.Addons[i])
			}
		}
	}
	if code != exitFailed || !strings.Contains(errOut, "addon argocd: release argocd revision 2 is failed: run rack up") {
		t.Errorf("exit %d, stderr %s; want 1 and what is wrong with Argo CD", code, errOut)
	}

	text, _, _ := rack(t, nil, args...)
	var rows []string
	for line := range strings.Lines(text) {
		rows = append(rows, strings.Join(strings.Fields(line), " "))
	}
	for _, s := range []string{
		"ADDON CHART VERSION STATUS READY",
		"metallb metallb 0.16.2 deployed 1/1",
		"argocd argo-cd 10.1.1 failed 0/0",
		"localPV - - incomplete 0/0",
		"localPV: missing StorageClass local-storage, PersistentVolume data-1: run rack up",
	} {
		if !slices.Contains(rows, s) {
			t.Errorf("text status lacks %q:\n%s", s, text)
		}
	}
}

// helmRecord stores a release revision the way Helm 3 does: a Secret
// whose release field is base64 of the gzipped JSON release.
func helmRecord(t *testing.T, cs kubernetes.Interface, ns, name string, revision int, status, chart, version string) {
	t.Helper()
	rel, err := json.Marshal(map[string]any{
		"name": name, "namespace": ns, "version": revision,
		"info":  map[string]any{"status": status},
		"chart": map[string]any{"metadata": map[string]any{"name": chart, "version": version}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write(rel); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("sh.helm.release.v1.%s.v%d", name, revision), Namespace: ns,
			Labels: map[string]string{"owner": "helm", "name": name, "status": status, "version": fmt.Sprint(revision)},
		},
		Type: "helm.sh/release.v1",
		Data: map[string][]byte{"release": []byte(base64.StdEncoding.EncodeToString(z.Bytes()))},
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func deployment(t *testing.T, cs kubernetes.Interface, ns, name string, replicas int32) {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: "quay.io/metallb/controller:v0.16.2"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
