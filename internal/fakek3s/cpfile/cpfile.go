// Package cpfile is the description of the test control plane that a fake
// k3s stands in front of. Tests write it on every test host; rack never
// reads or writes it. It is its own package so the fake binaries can use it
// without linking the test helpers.
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
	// URL is kube-apiserver's address as seen from the test hosts.
	URL string `json:"url"`
	// CAPEM is the cluster CA; it verifies the apiserver's certificate.
	CAPEM string `json:"caPEM"`
	// CertPEM and KeyPEM are an admin client certificate (system:masters):
	// what k3s.yaml carries and what the fake uses to register its Node.
	CertPEM string `json:"certPEM"`
	KeyPEM  string `json:"keyPEM"`
	// CAKeyPEM signs the client certificate each node's kubelet registers
	// with (system:node:<name>), as a k3s server signs its agents'.
	CAKeyPEM string `json:"caKeyPEM"`
	// EtcdURL is the test etcd's client URL, for a future etcd-snapshot.
	EtcdURL string `json:"etcdURL,omitempty"`
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
	if cp.URL == "" || cp.CAPEM == "" || cp.CertPEM == "" || cp.KeyPEM == "" || cp.CAKeyPEM == "" {
		return nil, fmt.Errorf("%s: url, caPEM, caKeyPEM, certPEM and keyPEM are all required", path)
	}
	return &cp, nil
}

// Marshal renders the file's content.
func (cp *ControlPlane) Marshal() []byte {
	b, _ := json.MarshalIndent(cp, "", "  ") // only strings: cannot fail
	return append(b, '\n')
}
