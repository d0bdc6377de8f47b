package k3s

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// k3sYAML is the shape of /etc/rancher/k3s/k3s.yaml.
const k3sYAML = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
users:
- user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
  name: default
`

const existing = `apiVersion: v1
kind: Config
clusters:
- cluster: {server: https://work.example:6443}
  name: work
contexts:
- context: {cluster: work, user: work}
  name: work
current-context: work
users:
- user: {token: abc}
  name: work
`

func TestKubeconfigMerge(t *testing.T) {
	kc, err := ParseKubeconfig([]byte(k3sYAML), "homelab", ServerURL("10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "config")
	if err := kc.Merge(path); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	cfg, _ := clientcmd.LoadFromFile(path)
	if cfg.CurrentContext != "homelab" || cfg.Clusters["homelab"].Server != "https://10.0.0.1:6443" {
		t.Fatalf("fresh file: %+v", cfg)
	}

	os.WriteFile(path, []byte(existing), 0o600)
	if err := kc.Merge(path); err != nil {
		t.Fatal(err)
	}
	cfg, _ = clientcmd.LoadFromFile(path)
	if cfg.CurrentContext != "work" {
		t.Errorf("current context changed to %q; rack must leave it", cfg.CurrentContext)
	}
	if cfg.Clusters["work"].Server != "https://work.example:6443" || cfg.AuthInfos["work"].Token != "abc" {
		t.Error("existing context was modified")
	}
	if cfg.Contexts["homelab"] == nil || string(cfg.AuthInfos["homelab"].ClientKeyData) != "KEY" {
		t.Error("homelab context missing")
	}
	got, err := LoadContext(path, "homelab")
	if err != nil {
		t.Fatal(err)
	}
	if rc, err := got.RESTConfig(); err != nil || rc.Host != "https://10.0.0.1:6443" {
		t.Fatalf("rest config %v %v", rc, err)
	}
	if _, err := LoadContext(path, "nope"); err == nil || !strings.Contains(err.Error(), `no context "nope"`) {
		t.Fatalf("missing context: %v", err)
	}
	ipv6, _ := ParseKubeconfig([]byte(k3sYAML), "v6", ServerURL("fd00::1"))
	if rc, _ := ipv6.RESTConfig(); rc.Host != "https://[fd00::1]:6443" {
		t.Fatalf("ipv6 host %q", rc.Host)
	}
	os.WriteFile(path, []byte("not: [yaml"), 0o600)
	if err := kc.Merge(path); err == nil || !strings.Contains(err.Error(), "will not touch it") {
		t.Fatalf("broken kubeconfig: %v", err)
	}
}
