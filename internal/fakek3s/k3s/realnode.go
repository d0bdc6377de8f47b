package main

import (
	"context"
	"fmt"

	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/noderuntime"
	"github.com/homelab/rack/internal/testpki"
)

// startRealNode runs what k3s' agent side runs on a host the test rack made
// real: containerd, a kubelet (reporting this k3s version) that registers
// the Node with its labels and taints, kube-proxy, and the pod network.
// Certificates come from the cluster CA, as a k3s server hands them out.
func startRealNode(ctx context.Context, s *settings, cp *cpfile.ControlPlane, n *nodeSpec, apiBase, dataDir string, log *logger) (*noderuntime.Node, error) {
	ca, err := testpki.ParseCA([]byte(cp.CAPEM), []byte(cp.CAKeyPEM))
	if err != nil {
		return nil, err
	}
	kubelet, err := ca.Issue(testpki.Spec{CN: "system:node:" + n.name, Orgs: []string{"system:nodes"}})
	if err != nil {
		return nil, err
	}
	proxy, err := ca.Issue(testpki.Spec{CN: "system:kube-proxy"})
	if err != nil {
		return nil, err
	}
	bin := cp.Bin.Kubelets[version]
	if bin == "" {
		return nil, fatal("the test rack has no kubelet for k3s %s (cpfile Bin.Kubelets)", version)
	}
	labels := map[string]string{}
	for k, v := range n.labels {
		labels[k] = v
	}
	var taints []string
	for _, t := range n.taints {
		spec := t.Key + ":" + t.Effect
		if t.Value != "" {
			spec = t.Key + "=" + t.Value + ":" + t.Effect
		}
		taints = append(taints, spec)
	}
	cfg := noderuntime.Config{
		NodeName: n.name, NodeIP: n.internalIP(), APIServer: apiBase, CAPEM: []byte(cp.CAPEM),
		KubeletCertPEM: kubelet.CertPEM, KubeletKeyPEM: kubelet.KeyPEM,
		ProxyCertPEM: proxy.CertPEM, ProxyKeyPEM: proxy.KeyPEM,
		Labels: labels, Taints: taints,
		ClusterCIDR: clusterCIDR(s), ServiceCIDR: serviceCIDR(s),
		Kubelet: bin, KubeProxy: cp.Bin.KubeProxy,
		DataDir: dataDir + "/agent", Images: cp.Images,
		KubeletArgs: prefixed(s.list("kubelet-arg")), ProxyArgs: prefixed(s.list("kube-proxy-arg")),
		Logf: log.infof,
	}
	rt, err := noderuntime.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("starting the node: %w", err)
	}
	return rt, nil
}

// prefixed turns k3s' kubelet-arg values (flag=value) into flags.
func prefixed(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = "--" + a
	}
	return out
}
