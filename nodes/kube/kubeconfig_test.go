package kube

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
	kc, err := ParseKubeconfig([]byte(k3sYAML), "homelab", ServerURL("10.0.0.1", 6443))
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
	ipv6, _ := ParseKubeconfig([]byte(k3sYAML), "v6", ServerURL("fd00::1", 6443))
	if rc, _ := ipv6.RESTConfig(); rc.Host != "https://[fd00::1]:6443" {
		t.Fatalf("ipv6 host %q", rc.Host)
	}
	os.WriteFile(path, []byte("not: [yaml"), 0o600)
	if err := kc.Merge(path); err == nil || !strings.Contains(err.Error(), "will not touch it") {
		t.Fatalf("broken kubeconfig: %v", err)
	}
}

// A kubeconfig fetched from a node is trusted for its CA and credentials
// only: an exec plugin, an auth provider, a proxy or file paths it carries
// would act on the admin's machine.
func TestParseKubeconfigKeepsOnlyCertsOrToken(t *testing.T) {
	planted := strings.Replace(k3sYAML, "    client-key-data: S0VZ\n", "    client-key-data: S0VZ\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'touch /tmp/pwned']\n", 1)
	planted = strings.Replace(planted, "    server: https://127.0.0.1:6443\n", "    server: https://127.0.0.1:6443\n    proxy-url: http://evil.example:3128\n", 1)
	kc, err := ParseKubeconfig([]byte(planted), "homelab", ServerURL("10.0.0.1", 6443))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := kc.Bytes()
	for _, bad := range []string{"exec", "/bin/sh", "proxy", "evil"} {
		if strings.Contains(string(data), bad) {
			t.Errorf("kept %q:\n%s", bad, data)
		}
	}
	onlyExec := strings.Replace(k3sYAML, "    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n", "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/true\n", 1)
	if _, err := ParseKubeconfig([]byte(onlyExec), "homelab", ServerURL("10.0.0.1", 6443)); err == nil || !strings.Contains(err.Error(), "neither an inline client certificate nor a token") {
		t.Errorf("a kubeconfig with only an exec plugin: %v", err)
	}
	noCA := strings.Replace(k3sYAML, "    certificate-authority-data: Q0E=\n", "    insecure-skip-tls-verify: true\n", 1)
	if _, err := ParseKubeconfig([]byte(noCA), "homelab", ServerURL("10.0.0.1", 6443)); err == nil || !strings.Contains(err.Error(), "CA certificate") {
		t.Errorf("a kubeconfig without a CA: %v", err)
	}
}

// Merging never silently replaces another cluster filed under the same name.
func TestMergeRefusesAnotherClusterOfTheSameName(t *testing.T) {
	kc, err := ParseKubeconfig([]byte(k3sYAML), "work", ServerURL("10.0.0.1", 6443))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config")
	os.WriteFile(path, []byte(strings.Replace(existing, "{server: https://work.example:6443}", "{server: https://work.example:6443, certificate-authority-data: T1RIRVI=}", 1)), 0o600)
	before, _ := os.ReadFile(path)
	err = kc.Merge(path)
	if err == nil || !strings.Contains(err.Error(), `"work" for another cluster`) || !strings.Contains(err.Error(), "rename-context") {
		t.Fatalf("merge over another cluster's context: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("the file changed although the merge was refused")
	}
	// The same cluster (same CA) at a new address is updated in place.
	same := strings.Replace(existing, "{server: https://work.example:6443}", "{server: https://old.example:6443, certificate-authority-data: Q0E=}", 1)
	os.WriteFile(path, []byte(same), 0o600)
	if err := kc.Merge(path); err != nil {
		t.Fatal(err)
	}
	cfg, _ := clientcmd.LoadFromFile(path)
	if cfg.Clusters["work"].Server != "https://10.0.0.1:6443" {
		t.Errorf("same cluster not updated: %+v", cfg.Clusters["work"])
	}
}

// A kubeconfig kept elsewhere and linked as ~/.kube/config stays a link.
func TestMergeKeepsSymlink(t *testing.T) {
	kc, err := ParseKubeconfig([]byte(k3sYAML), "homelab", ServerURL("10.0.0.1", 6443))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "dotfiles", "kubeconfig")
	os.MkdirAll(filepath.Dir(target), 0o700)
	os.WriteFile(target, []byte(existing), 0o600)
	link := filepath.Join(dir, ".kube", "config")
	os.MkdirAll(filepath.Dir(link), 0o700)
	if err := os.Symlink("../dotfiles/kubeconfig", link); err != nil {
		t.Fatal(err)
	}
	if err := kc.Merge(link); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("%s is no longer a symlink: %v %v", link, st, err)
	}
	cfg, _ := clientcmd.LoadFromFile(target)
	if cfg.Contexts["homelab"] == nil || cfg.Contexts["work"] == nil {
		t.Fatalf("the link's target was not updated: %v", cfg.Contexts)
	}
}
