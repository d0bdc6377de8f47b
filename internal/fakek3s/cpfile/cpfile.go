// Package cpfile describes, for a fake k3s on a test host, the test rack it
// runs in: the cluster's CA (a k3s server keeps its CA in the datastore and
// shares it with every server; the test rack hands it to each host instead),
// the admin credentials tests use, and where the Kubernetes binaries a k3s
// server or a real node runs are. Tests write it on every test host; rack
// never reads or writes it. It is its own package so the fake binaries can
// use it without linking the test helpers.
package cpfile

import (
	"encoding/json"
	"fmt"
	"os"
)

// DefaultPath is where the fake k3s looks unless built with
// -ldflags "-X main.controlPlaneFile=…".
const DefaultPath = "/etc/rancher/.fake/controlplane.json"

// ControlPlane is the file's content.
type ControlPlane struct {
	// CAPEM and CAKeyPEM are the cluster CA: it signs every certificate a
	// server serves or hands out (API server, controllers, kubelets).
	CAPEM    string `json:"caPEM"`
	CAKeyPEM string `json:"caKeyPEM"`
	// CertPEM and KeyPEM are an admin client certificate (system:masters):
	// what k3s.yaml carries, so tests and rack use the same credentials.
	CertPEM string `json:"certPEM"`
	KeyPEM  string `json:"keyPEM"`
	// SAKeyPEM and SAPubPEM sign and check service account tokens; every
	// server of a cluster must use the same pair.
	SAKeyPEM string `json:"saKeyPEM"`
	SAPubPEM string `json:"saPubPEM"`
	// Bin are the binaries a server runs (and a real node's).
	Bin Binaries `json:"bin"`
	// RealNode makes this host run a real kubelet, containerd and
	// kube-proxy (internal/noderuntime) instead of leaving its Node to kwok.
	RealNode bool `json:"realNode,omitempty"`
	// PodNetwork says the cluster has real nodes: a server that is not one
	// itself still needs to reach their pods (admission webhooks).
	PodNetwork bool `json:"podNetwork,omitempty"`
	// Images are OCI image tars a real node imports into containerd.
	Images []string `json:"images,omitempty"`
}

// Binaries are paths on the machine (test hosts share its file system).
type Binaries struct {
	Etcd, Etcdctl, Etcdutl, Kine            string
	APIServer, ControllerManager, Scheduler string
	// Kubelet and KubeProxy are needed only with RealNode. Kubelets are
	// kubelets stamped with a k3s version (as k3s' embedded kubelet reports
	// it), by version; Kubelet is the plain one.
	Kubelet, KubeProxy string            `json:",omitempty"`
	Kubelets           map[string]string `json:",omitempty"`
}

// Read loads and checks a control-plane file.
func Read(path string) (*ControlPlane, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cp ControlPlane
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if cp.CAPEM == "" || cp.CAKeyPEM == "" || cp.CertPEM == "" || cp.KeyPEM == "" || cp.SAKeyPEM == "" || cp.SAPubPEM == "" {
		return nil, fmt.Errorf("%s: caPEM, caKeyPEM, certPEM, keyPEM, saKeyPEM and saPubPEM are all required", path)
	}
	return &cp, nil
}

// Marshal renders the file's content.
func (cp *ControlPlane) Marshal() []byte {
	b, _ := json.MarshalIndent(cp, "", "  ") // only strings: cannot fail
	return append(b, '\n')
}
