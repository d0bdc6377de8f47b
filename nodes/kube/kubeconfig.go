package k3s

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/homelab/rack/inventory"
	"github.com/homelab/rack/nodes"
)

// Kubeconfig is the cluster's admin kubeconfig as fetched from the first
// server, with its server address rewritten to the apiEndpoint. It holds
// credentials: never print it, and write it 0600.
type Kubeconfig struct {
	config *clientcmdapi.Config
}

// ParseKubeconfig reads k3s.yaml and points it at server (https://host:6443),
// naming its cluster, user and context after the cluster.
func ParseKubeconfig(data []byte, clusterName, server string) (*Kubeconfig, error) {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("the server's %s is not a kubeconfig: %w", KubeconfigPath, err)
	}
	ctxName := cfg.CurrentContext
	kctx, ok := cfg.Contexts[ctxName]
	if !ok {
		return nil, fmt.Errorf("the server's %s has no current context", KubeconfigPath)
	}
	cluster, ok1 := cfg.Clusters[kctx.Cluster]
	user, ok2 := cfg.AuthInfos[kctx.AuthInfo]
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("the server's %s is incomplete (context %q)", KubeconfigPath, ctxName)
	}
	cluster = cluster.DeepCopy()
	cluster.Server = server
	out := clientcmdapi.NewConfig()
	out.Clusters[clusterName] = cluster
	out.AuthInfos[clusterName] = user.DeepCopy()
	out.Contexts[clusterName] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: clusterName}
	out.CurrentContext = clusterName
	return &Kubeconfig{config: out}, nil
}

// RESTConfig is a client configuration for this cluster.
func (k *Kubeconfig) RESTConfig() (*rest.Config, error) {
	return clientcmd.NewDefaultClientConfig(*k.config, &clientcmd.ConfigOverrides{}).ClientConfig()
}

// Clientset is a client-go clientset for this cluster.
func (k *Kubeconfig) Clientset() (*kubernetes.Clientset, error) {
	rc, err := k.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

// Bytes is the kubeconfig serialized (credentials included).
func (k *Kubeconfig) Bytes() ([]byte, error) { return clientcmd.Write(*k.config) }

// StateKubeconfig is rack's own copy of the cluster's admin kubeconfig, kept
// 0600 beside the token in .rack/<cluster>/.
func StateKubeconfig(inv *inventory.Inventory) string {
	return filepath.Join(inv.StateDir(), "kubeconfig")
}

// Save writes the kubeconfig alone to path, 0600, in a 0700 folder.
func (k *Kubeconfig) Save(path string) error {
	data, err := k.Bytes()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return nodes.WriteFileAtomic(path, data, 0o600)
}

// DefaultKubeconfigPath is the first file of $KUBECONFIG, else ~/.kube/config.
func DefaultKubeconfigPath() (string, error) {
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return filepath.SplitList(env)[0], nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home folder for ~/.kube/config: %w (set KUBECONFIG)", err)
	}
	return filepath.Join(home, ".kube", "config"), nil
}

// Merge writes the cluster's context into the kubeconfig file at path: the
// cluster, user and context named after the cluster are replaced, everything
// else in the file stays as it was. The file is written atomically, 0600.
// The current context is set only when the file had none.
func (k *Kubeconfig) Merge(path string) error {
	existing := clientcmdapi.NewConfig()
	if data, err := os.ReadFile(path); err == nil {
		if existing, err = clientcmd.Load(data); err != nil {
			return fmt.Errorf("%s is not a valid kubeconfig, so rack will not touch it: %w", path, err)
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	for name, c := range k.config.Clusters {
		existing.Clusters[name] = c
	}
	for name, a := range k.config.AuthInfos {
		existing.AuthInfos[name] = a
	}
	for name, c := range k.config.Contexts {
		existing.Contexts[name] = c
	}
	if existing.CurrentContext == "" {
		existing.CurrentContext = k.config.CurrentContext
	}
	data, err := clientcmd.Write(*existing)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return nodes.WriteFileAtomic(path, data, 0o600)
}

// LoadContext reads the context named after the cluster from a kubeconfig
// file (the one rack merged), for commands that only talk to the API.
func LoadContext(path, clusterName string) (*Kubeconfig, error) {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("no kubeconfig at %s: run `rack up` first (it writes context %q there)", path, clusterName)
		}
		return nil, fmt.Errorf("read kubeconfig %s: %w", path, err)
	}
	kctx, ok := cfg.Contexts[clusterName]
	if !ok {
		names := make([]string, 0, len(cfg.Contexts))
		for n := range cfg.Contexts {
			names = append(names, n)
		}
		return nil, fmt.Errorf("kubeconfig %s has no context %q (has: %s): run `rack up` to create it", path, clusterName, strings.Join(names, ", "))
	}
	out := clientcmdapi.NewConfig()
	out.Clusters[clusterName] = cfg.Clusters[kctx.Cluster]
	out.AuthInfos[clusterName] = cfg.AuthInfos[kctx.AuthInfo]
	out.Contexts[clusterName] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: clusterName, Namespace: kctx.Namespace}
	out.CurrentContext = clusterName
	if out.Clusters[clusterName] == nil || out.AuthInfos[clusterName] == nil {
		return nil, fmt.Errorf("kubeconfig %s: context %q refers to a missing cluster or user: run `rack up` to rewrite it", path, clusterName)
	}
	return &Kubeconfig{config: out}, nil
}
