package noderuntime

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/homelab/rack/internal/jsonapi"
)

// Admin is a client identity allowed to create and approve
// CertificateSigningRequests (the fake k3s's system:masters certificate).
type Admin struct {
	URL                    string
	CAPEM, CertPEM, KeyPEM []byte
}

// Signers the controller-manager signs with the cluster CA.
const (
	SignerKubelet = "kubernetes.io/kube-apiserver-client-kubelet"
	SignerClient  = "kubernetes.io/kube-apiserver-client"
)

// NodeCerts fills cfg's kubelet (system:node:<NodeName> in system:nodes) and
// kube-proxy (system:kube-proxy) certificates through the certificates API,
// as a k3s server issues its agents' certificates: the caller needs admin
// credentials only, not the CA key.
func NodeCerts(ctx context.Context, admin Admin, cfg *Config) error {
	var err error
	cfg.KubeletCertPEM, cfg.KubeletKeyPEM, err = RequestClientCert(ctx, admin, "system:node:"+cfg.NodeName, []string{"system:nodes"}, SignerKubelet)
	if err != nil {
		return err
	}
	cfg.ProxyCertPEM, cfg.ProxyKeyPEM, err = RequestClientCert(ctx, admin, "system:kube-proxy", nil, SignerClient)
	return err
}

// RequestClientCert creates a CertificateSigningRequest for user cn in
// groups orgs, approves it and waits for the controller-manager to sign it.
func RequestClientCert(ctx context.Context, admin Admin, cn string, orgs []string, signer string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: orgs}}, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	api, err := admin.client()
	if err != nil {
		return nil, nil, err
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := strings.NewReplacer(":", "-").Replace(cn) + "-" + hex.EncodeToString(suffix)
	base := "/apis/certificates.k8s.io/v1/certificatesigningrequests"
	usages := []string{"digital signature", "client auth"}
	if signer == SignerKubelet {
		usages = []string{"digital signature", "key encipherment", "client auth"}
	}
	csr := map[string]any{
		"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"request":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			"signerName": signer,
			"usages":     usages,
		},
	}
	if err := api.Do(ctx, http.MethodPost, base, "", csr, &csr); err != nil {
		return nil, nil, fmt.Errorf("creating the CSR for %s: %w", cn, err)
	}
	defer func() { _ = api.Do(context.Background(), http.MethodDelete, base+"/"+name, "", nil, nil) }()
	// Approval is a condition on the status, written through /approval;
	// controllers touch a new CSR, so re-read it on a conflict.
	for attempt := 0; ; attempt++ {
		csr["status"] = map[string]any{"conditions": []map[string]any{{
			"type": "Approved", "status": "True", "reason": "RackNodeRuntime", "message": "approved by the test rack's node runtime",
		}}}
		err := api.Do(ctx, http.MethodPut, base+"/"+name+"/approval", "", csr, nil)
		if err == nil {
			break
		}
		if jsonapi.StatusOf(err) != http.StatusConflict || attempt == 10 {
			return nil, nil, fmt.Errorf("approving the CSR for %s: %w", cn, err)
		}
		if err := api.Do(ctx, http.MethodGet, base+"/"+name, "", nil, &csr); err != nil {
			return nil, nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		var got struct {
			Status struct {
				Certificate []byte `json:"certificate"`
			} `json:"status"`
		}
		if err := api.Do(ctx, http.MethodGet, base+"/"+name, "", nil, &got); err == nil && len(got.Status.Certificate) > 0 {
			return got.Status.Certificate, keyPEM, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("CSR %s for %s not signed (is the controller-manager signing with the cluster CA?): %w", name, cn, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// client is a client of the API server with a's identity.
func (a Admin) client() (*jsonapi.Client, error) {
	return jsonapi.New(a.URL, a.CAPEM, a.CertPEM, a.KeyPEM)
}
