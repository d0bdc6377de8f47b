package k3s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/homelab/rack/nodes"
)

// etcdMemberRemove removes a member through etcd's JSON gateway on the
// server h reaches (its loopback, through the SSH connection), with k3s'
// etcd client certificate when the server has one, as EtcdMembers reads.
func etcdMemberRemove(ctx context.Context, h *nodes.Host, id uint64) error {
	_, err := etcdGateway(ctx, h, "/v3/cluster/member/remove", `{"ID":"`+strconv.FormatUint(id, 10)+`"}`)
	return err
}

func etcdGateway(ctx context.Context, h *nodes.Host, path, body string) ([]byte, error) {
	client := h.Client()
	if client == nil {
		return nil, fmt.Errorf("%s: not connected", h.Target.Name)
	}
	scheme := "http"
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return client.DialContext(ctx, "tcp", etcdClientURL)
	}}
	defer tr.CloseIdleConnections()
	read := func(p string) ([]byte, error) {
		return h.Output(ctx, nodes.Sh(`cat -- "$1"`, p), nodes.RunOptions{Privileged: true, Quiet: true})
	}
	crt, err1 := read(etcdTLSDir + "/client.crt")
	key, err2 := read(etcdTLSDir + "/client.key")
	ca, err3 := read(etcdTLSDir + "/server-ca.crt")
	if err1 == nil && err2 == nil && err3 == nil {
		cert, err := tls.X509KeyPair(crt, key)
		if err != nil {
			return nil, fmt.Errorf("%s: k3s' etcd client certificate in %s: %w", h.Target.Name, etcdTLSDir, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("%s: %s/server-ca.crt holds no certificate", h.Target.Name, etcdTLSDir)
		}
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	}
	hc := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, scheme+"://"+etcdClientURL+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: etcd %s: %w", h.Target.Name, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: etcd %s: %s: %s", h.Target.Name, path, resp.Status, strings.TrimSpace(string(out)))
	}
	return out, nil
}
