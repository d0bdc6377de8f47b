package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/testpki"
)

// apiClient talks to kube-apiserver's REST API with plain net/http: a
// client-go dependency would multiply the size of a binary that is copied
// onto every test host.
type apiClient struct {
	base string
	hc   *http.Client
}

func tlsConfig(cp *cpfile.ControlPlane, withClientCert bool) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cp.CAPEM)) {
		return nil, errors.New("control plane CA: no certificate in caPEM")
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if withClientCert {
		cert, err := tls.X509KeyPair([]byte(cp.CertPEM), []byte(cp.KeyPEM))
		if err != nil {
			return nil, fmt.Errorf("control plane client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// nodeClient is the node's kubelet identity: a client certificate for
// system:node:<name> in group system:nodes, signed with the cluster CA.
func nodeClient(base string, cp *cpfile.ControlPlane, name string) (*apiClient, error) {
	ca, err := testpki.ParseCA([]byte(cp.CAPEM), []byte(cp.CAKeyPEM))
	if err != nil {
		return nil, err
	}
	kp, err := ca.Issue(testpki.Spec{CN: "system:node:" + name, Orgs: []string{"system:nodes"}})
	if err != nil {
		return nil, err
	}
	return newAPIClientAs(base, cp, string(kp.CertPEM), string(kp.KeyPEM))
}

func newAPIClient(base string, cp *cpfile.ControlPlane) (*apiClient, error) {
	return newAPIClientAs(base, cp, cp.CertPEM, cp.KeyPEM)
}

// newAPIClientAs talks to the API with another client certificate: the
// node's own, so that the Node authorizer and NodeRestriction judge what it
// does, as they judge a kubelet.
func newAPIClientAs(base string, cp *cpfile.ControlPlane, certPEM, keyPEM string) (*apiClient, error) {
	cfg, err := tlsConfig(cp, false)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return &apiClient{
		base: strings.TrimSuffix(base, "/"),
		hc: &http.Client{
			Timeout:   15 * time.Second,
			Transport: &http.Transport{TLSClientConfig: cfg, TLSHandshakeTimeout: 5 * time.Second},
		},
	}, nil
}

// apiError is a non-2xx answer; Status is the HTTP status code.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Message) }

func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// do sends body (JSON-encoded unless nil) and decodes a 2xx answer into
// out (unless nil). contentType defaults to application/json.
func (a *apiClient) do(ctx context.Context, method, path, contentType string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", "k3s/"+version)
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		// A Status object says what went wrong; fall back to the raw text.
		var st struct{ Message string }
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		return &apiError{Status: resp.StatusCode, Message: msg}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
