package main

import (
	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/jsonapi"
	"github.com/homelab/rack/internal/testpki"
)

// nodeClient is the node's kubelet identity: a client certificate for
// system:node:<name> in group system:nodes, signed with the cluster CA, so
// that the Node authorizer and NodeRestriction judge what it does, as they
// judge a kubelet.
func nodeClient(base string, cp *cpfile.ControlPlane, name string) (*jsonapi.Client, error) {
	ca, err := testpki.ParseCA([]byte(cp.CAPEM), []byte(cp.CAKeyPEM))
	if err != nil {
		return nil, err
	}
	kp, err := ca.Issue(testpki.Spec{CN: "system:node:" + name, Orgs: []string{"system:nodes"}})
	if err != nil {
		return nil, err
	}
	return apiClientAs(base, cp, kp.CertPEM, kp.KeyPEM)
}

// newAPIClient is the control plane's admin identity.
func newAPIClient(base string, cp *cpfile.ControlPlane) (*jsonapi.Client, error) {
	return apiClientAs(base, cp, []byte(cp.CertPEM), []byte(cp.KeyPEM))
}

func apiClientAs(base string, cp *cpfile.ControlPlane, certPEM, keyPEM []byte) (*jsonapi.Client, error) {
	c, err := jsonapi.New(base, []byte(cp.CAPEM), certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	c.UserAgent = "k3s/" + version
	return c, nil
}
