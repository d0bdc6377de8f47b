// Package kube is rack's side of the Kubernetes API: kubeconfigs, a client,
// readiness, node status, and labels and taints, kept apart from the k3s
// installer so that day-2 commands (drain, upgrade, backup) need only this.
package kube

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/homelab/rack/internal/atomicfile"
)

// Kubeconfig is a cluster's admin kubeconfig, reduced to what rack trusts:
// one cluster (server and CA) and one user with a client certificate or a
// token. It holds credentials: never print it, and write it 0600.
type Kubeconfig struct {
	config *clientcmdapi.Config
	name   string
}

// ServerURL is https://host:port, with brackets around an IPv6 address.
func ServerURL(host string, port int) string {
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = a.String()
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// ParseKubeconfig reads a kubeconfig fetched from a node (k3s.yaml) and keeps
// only its current context's server CA and its certificate or token
// credentials, pointed at server and named after the cluster. Everything else
// is dropped: a node must not be able to plant an exec plugin, an auth
// provider, a proxy or file paths that would act on the admin's machine.
func ParseKubeconfig(data []byte, clusterName, server string) (*Kubeconfig, error) {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("not a kubeconfig: %w", err)
	}
	kctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return nil, fmt.Errorf("the kubeconfig has no current context")
	}
	cluster, ok1 := cfg.Clusters[kctx.Cluster]
	user, ok2 := cfg.AuthInfos[kctx.AuthInfo]
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("the kubeconfig is incomplete (context %q)", cfg.CurrentContext)
	}
	if len(cluster.CertificateAuthorityData) == 0 || cluster.InsecureSkipTLSVerify {
		return nil, fmt.Errorf("the kubeconfig does not carry the cluster's CA certificate inline: rack will not talk to an API server it cannot verify")
	}
	var clean clientcmdapi.AuthInfo
	switch {
	case len(user.ClientCertificateData) > 0 && len(user.ClientKeyData) > 0:
		clean.ClientCertificateData, clean.ClientKeyData = user.ClientCertificateData, user.ClientKeyData
	case user.Token != "":
		clean.Token = user.Token
	default:
		return nil, fmt.Errorf("the kubeconfig's user %q has neither an inline client certificate nor a token: rack accepts no other credentials (exec plugins, auth providers, files) from a node", kctx.AuthInfo)
	}
	out := clientcmdapi.NewConfig()
	out.Clusters[clusterName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: cluster.CertificateAuthorityData}
	out.AuthInfos[clusterName] = &clean
	out.Contexts[clusterName] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: clusterName}
	out.CurrentContext = clusterName
	return &Kubeconfig{config: out, name: clusterName}, nil
}

// RESTConfig is a client configuration for this cluster.
func (k *Kubeconfig) RESTConfig() (*rest.Config, error) {
	return clientcmd.NewDefaultClientConfig(*k.config, &clientcmd.ConfigOverrides{}).ClientConfig()
}

// Clientset is a client-go clientset for this cluster.
func (k *Kubeconfig) Clientset() (kubernetes.Interface, error) {
	rc, err := k.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

// NewClient is a clientset for a client configuration.
func NewClient(rc *rest.Config) (kubernetes.Interface, error) { return kubernetes.NewForConfig(rc) }

// NewClients are a clientset and a dynamic client (for custom resources)
// for a client configuration.
func NewClients(rc *rest.Config) (kubernetes.Interface, dynamic.Interface, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	return cs, dyn, nil
}

// Bytes is the kubeconfig serialized (credentials included).
func (k *Kubeconfig) Bytes() ([]byte, error) { return clientcmd.Write(*k.config) }

// Save writes the kubeconfig alone to path, 0600, in a 0700 folder.
func (k *Kubeconfig) Save(path string) error {
	data, err := k.Bytes()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// DefaultPath is the first file of $KUBECONFIG, else ~/.kube/config.
func DefaultPath() (string, error) {
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return filepath.SplitList(env)[0], nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home folder for ~/.kube/config: %w (set KUBECONFIG)", err)
	}
	return filepath.Join(home, ".kube", "config"), nil
}

// Merge writes this cluster's context into the kubeconfig file at path:
// everything else in the file stays as it was, and its current context is set
// only when it had none. An entry of the same name that belongs to another
// cluster (another CA) is never replaced: Merge refuses and says how to make
// room. The file is written atomically, 0600; a symlink stays a symlink.
func (k *Kubeconfig) Merge(path string) error {
	existing := clientcmdapi.NewConfig()
	if data, err := os.ReadFile(path); err == nil {
		if existing, err = clientcmd.Load(data); err != nil {
			return fmt.Errorf("%s is not a valid kubeconfig, so rack will not touch it: %w", path, err)
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	name := k.name
	mine := k.config.Clusters[name]
	if other := otherCluster(existing, name, mine.CertificateAuthorityData); other != "" {
		return fmt.Errorf("%s already has a %s named %q for another cluster (a different CA, server %s): rack will not replace it; "+
			"rename it (kubectl config rename-context %s %s-old) or delete it (kubectl config delete-context %s; kubectl config delete-cluster %s; kubectl config delete-user %s), "+
			"or point KUBECONFIG at another file; rack's own copy is in .rack/%s/kubeconfig",
			path, other, name, existingServer(existing, name), name, name, name, name, name, name)
	}
	existing.Clusters[name] = mine
	existing.AuthInfos[name] = k.config.AuthInfos[name]
	existing.Contexts[name] = k.config.Contexts[name]
	if existing.CurrentContext == "" {
		existing.CurrentContext = name
	}
	data, err := clientcmd.Write(*existing)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// otherCluster names the kind of entry ("context", "cluster") called name in
// cfg that belongs to a cluster with another CA than ca, or "".
func otherCluster(cfg *clientcmdapi.Config, name string, ca []byte) string {
	differs := func(c *clientcmdapi.Cluster) bool {
		return c != nil && !bytes.Equal(c.CertificateAuthorityData, ca)
	}
	if c, ok := cfg.Contexts[name]; ok && differs(cfg.Clusters[c.Cluster]) {
		return "context"
	}
	if differs(cfg.Clusters[name]) {
		return "cluster"
	}
	return ""
}

func existingServer(cfg *clientcmdapi.Config, name string) string {
	if c, ok := cfg.Contexts[name]; ok && cfg.Clusters[c.Cluster] != nil {
		return cfg.Clusters[c.Cluster].Server
	}
	if c := cfg.Clusters[name]; c != nil {
		return c.Server
	}
	return "unknown"
}

// LoadContext reads the context named after the cluster from a kubeconfig
// file (the one rack merged or its own copy), for commands that only talk to
// the API.
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
		sort.Strings(names)
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
	return &Kubeconfig{config: out, name: clusterName}, nil
}
